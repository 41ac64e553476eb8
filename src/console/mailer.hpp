// Transactional email (address verification, password reset, invitations) over SMTP through libcurl:
// smtp:// (STARTTLS when the server offers it, required for smtps-less remote servers by `smtp_url`'s
// scheme: smtps:// is TLS from the start). Credentials come from a file, never argv. Without `smtp_url`
// the node sends nothing and says so; admins hand out links from the CLI instead.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace inferllama::console {

struct Mail {
  std::string to;  // a checked address (no CR, LF or angle brackets)
  std::string subject;
  std::string text;  // plain text, lines ending in \n
};

class Mailer {
 public:
  virtual ~Mailer() = default;
  // Whether mail can be sent at all (smtp_url is set).
  virtual bool configured() const = 0;
  // Sends one mail, blocking (call it off the I/O threads). nullopt when the server took it, else why not.
  virtual std::optional<std::string> send(const Mail& mail) = 0;
};

struct SmtpSettings {
  std::string url;                         // smtp://host:port or smtps://host:port; "" = no mail
  std::string from;                        // the envelope and From: address
  std::filesystem::path credentials_file;  // "user:password" on its first line; empty = no AUTH
};

class SmtpMailer final : public Mailer {
 public:
  // Reads the credentials file now (a missing or group/other-readable one throws std::runtime_error).
  explicit SmtpMailer(SmtpSettings settings);
  bool configured() const override { return !settings_.url.empty(); }
  std::optional<std::string> send(const Mail& mail) override;

 private:
  SmtpSettings settings_;
  std::string user_, password_;
};

// The RFC 5322 message of `mail` from `from`, with a Date, a Message-ID and UTF-8 text: what send() puts
// on the wire, exposed for tests. Header values are checked to hold no CR or LF.
std::string mail_message(const Mail& mail, const std::string& from);

}  // namespace inferllama::console
