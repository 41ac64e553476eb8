#include "console/mailer.hpp"

#include <curl/curl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <stdexcept>

#include "inferllama/digest.hpp"
#include "usage/crypto.hpp"

namespace inferllama::console {
namespace {

bool one_line(std::string_view value) {
  return value.find_first_of("\r\n") == std::string_view::npos;
}

bool plain_address(std::string_view address) {
  return !address.empty() && one_line(address) && address.find_first_of("<>,; \t") == std::string_view::npos;
}

std::string rfc5322_date() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[64];
  std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S +0000", &utc);
  return text;
}

// A subject in RFC 2047's encoded-word form when it is not plain ASCII.
std::string subject_header(std::string_view subject) {
  const bool ascii = std::all_of(subject.begin(), subject.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  if (ascii) return std::string(subject);
  std::string out = "=?UTF-8?Q?";
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char c : subject) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= '0' && u <= '9') || (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z')) {
      out += c;
    } else if (u == ' ') {
      out += '_';
    } else {
      out += '=';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out + "?=";
}

struct Upload {
  std::string_view data;
  std::size_t sent = 0;
};

std::size_t read_message(char* into, std::size_t size, std::size_t count, void* user) {
  auto& upload = *static_cast<Upload*>(user);
  const std::size_t n = std::min(size * count, upload.data.size() - upload.sent);
  std::copy_n(upload.data.data() + upload.sent, n, into);
  upload.sent += n;
  return n;
}

}  // namespace

std::string mail_message(const Mail& mail, const std::string& from) {
  if (!plain_address(mail.to) || !plain_address(from) || !one_line(mail.subject)) {
    throw std::invalid_argument("a mail header value holds a line break or is not a plain address");
  }
  const auto id = usage::crypto::random_bytes<12>();
  const auto at = from.find('@');
  std::string message = "Date: " + rfc5322_date() + "\r\nFrom: <" + from + ">\r\nTo: <" + mail.to +
                        ">\r\nSubject: " + subject_header(mail.subject) + "\r\nMessage-ID: <" +
                        hex(std::string_view(reinterpret_cast<const char*>(id.data()), id.size())) +
                        (at == std::string::npos ? std::string("@inferllama") : from.substr(at)) +
                        ">\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: 8bit\r\n\r\n";
  // SMTP lines end in CRLF; a line that is a lone dot is escaped by libcurl.
  for (const char c : mail.text) {
    if (c == '\n') message += '\r';
    if (c != '\r') message += c;
  }
  return message;
}

SmtpMailer::SmtpMailer(SmtpSettings settings) : settings_(std::move(settings)) {
  if (settings_.credentials_file.empty()) return;
  struct stat st {};
  if (::stat(settings_.credentials_file.c_str(), &st) != 0) {
    throw std::runtime_error("smtp_credentials_file " + settings_.credentials_file.string() + " cannot be read");
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    throw std::runtime_error("smtp_credentials_file " + settings_.credentials_file.string() +
                             " is readable by others: chmod 600 it");
  }
  std::ifstream in(settings_.credentials_file);
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const auto colon = line.find(':');
  if (colon == std::string::npos) {
    throw std::runtime_error("smtp_credentials_file must hold USER:PASSWORD on its first line");
  }
  user_ = line.substr(0, colon);
  password_ = line.substr(colon + 1);
}

std::optional<std::string> SmtpMailer::send(const Mail& mail) {
  if (!configured()) return std::string("this node sends no email (smtp_url is not set)");
  std::string message;
  try {
    message = mail_message(mail, settings_.from);
  } catch (const std::invalid_argument& e) {
    return std::string(e.what());
  }
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return std::string("cannot start an SMTP client");
  const std::string from = "<" + settings_.from + ">", to = "<" + mail.to + ">";
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> recipients(curl_slist_append(nullptr, to.c_str()),
                                                                         curl_slist_free_all);
  Upload upload{message};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, settings_.url.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_FROM, from.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, recipients.get());
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, read_message);
  curl_easy_setopt(c, CURLOPT_READDATA, &upload);
  curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  // Credentials only over TLS: STARTTLS is required when a password is sent on smtp://.
  if (!user_.empty()) {
    curl_easy_setopt(c, CURLOPT_USERNAME, user_.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, password_.c_str());
    curl_easy_setopt(c, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_ALL));
  } else {
    curl_easy_setopt(c, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_TRY));
  }
  const CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK) return std::string("the SMTP server did not take the mail: ") + curl_easy_strerror(code);
  return std::nullopt;
}

}  // namespace inferllama::console
