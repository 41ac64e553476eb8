#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// Which metadata requests the node stores answers for. Only the parameters real clients send are
// accepted, in one canonical form (sorted, deduplicated, booleans as "true", false ones left out,
// values percent-encoded one way), so that equivalent requests share one stored answer; any other
// parameter or value makes a request one the node forwards to the Hub without storing its answer.
namespace inferllama::hub {

// `GET /api/{models,datasets,spaces}/{repo}[/revision/{rev}]`:
//   expand=<field> (repeatable): huggingface_hub HfApi.model_info/dataset_info/space_info(expand=[...])
//     and @huggingface/hub modelInfo/datasetInfo/spaceInfo (additionalFields), whose fields are those
//     of ExpandModelProperty_T / ExpandDatasetProperty_T / ExpandSpaceProperty_T; `expand[]=` is the
//     spelling of older @huggingface/hub versions; the node itself asks `expand=sha`, `expand=private`
//     and `expand=gated`;
//   securityStatus=true: HfApi.model_info(securityStatus=True);
//   blobs=true: HfApi.*_info(files_metadata=True).
std::optional<std::string> canonical_info_query(std::string_view query);

// `GET /api/{type}s/{repo}/tree/{rev}[/{path}]`:
//   recursive, expand (booleans): HfApi.list_repo_tree(recursive=, expand=) and @huggingface/hub
//     listFiles({recursive, expand}), both always sent;
//   cursor, limit: the Hub's pagination, present only in the `Link: rel="next"` URL both clients follow.
struct TreeQuery {
  std::string canonical;
  bool has_cursor = false;
};
std::optional<TreeQuery> canonical_tree_query(std::string_view query);

// `POST /api/{type}s/{repo}/paths-info/{rev}`: a form body `paths=..&paths=..&expand=..` from
// HfApi.get_paths_info(paths, expand=) or a JSON body {"paths": [...], "expand": bool} from
// @huggingface/hub pathsInfo. The canonical request is the form body of the sorted, deduplicated paths.
struct PathsQuery {
  std::string body;  // application/x-www-form-urlencoded
  std::vector<std::string> paths;
};
std::optional<PathsQuery> canonical_paths_query(std::string_view content_type, std::string_view body);

// Whether a paths-info answer (a JSON list of entries) describes every path asked for: an answer that
// leaves some out (paths that do not exist) is not stored, so made-up paths do not fill the store.
bool describes_every_path(std::string_view answer, const std::vector<std::string>& paths);

}  // namespace inferllama::hub
