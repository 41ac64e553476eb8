#include "scan/allowlist.hpp"

#include <algorithm>
#include <array>

namespace inferllama::scan {
namespace {

// Exact names. A name that calls something it is given (torch._tensor._rebuild_from_type_v2 calls its first
// argument) is here because what it is given must itself be imported, and is judged on its own.
constexpr std::array kAllowed = std::to_array<std::string_view>({
    "_codecs.encode",  // how protocol 2 writes bytes
    "builtins.bool",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.complex",
    "builtins.dict",
    "builtins.float",
    "builtins.frozenset",
    "builtins.int",
    "builtins.list",
    "builtins.object",
    "builtins.range",
    "builtins.set",
    "builtins.slice",
    "builtins.str",
    "builtins.tuple",
    "collections.Counter",
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "copyreg._reconstructor",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.dtype",
    "numpy.ndarray",
    "torch.Size",
    "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_wrapper_subclass",
    "torch.bfloat16",
    "torch.bool",
    "torch.channels_last",
    "torch.complex128",
    "torch.complex32",
    "torch.complex64",
    "torch.contiguous_format",
    "torch.device",
    "torch.double",
    "torch.float",
    "torch.float16",
    "torch.float32",
    "torch.float64",
    "torch.float8_e4m3fn",
    "torch.float8_e5m2",
    "torch.half",
    "torch.int",
    "torch.int16",
    "torch.int32",
    "torch.int64",
    "torch.int8",
    "torch.long",
    "torch.nn.parameter.Parameter",
    "torch.preserve_format",
    "torch.qint32",
    "torch.qint8",
    "torch.quint8",
    "torch.short",
    "torch.sparse_coo",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "torch.strided",
    "torch.uint8",
});
static_assert(std::is_sorted(kAllowed.begin(), kAllowed.end()), "kept sorted for binary search");

// A name of `module` with nothing dotted after it that ends in `suffix`: torch.FloatStorage, numpy.dtypes.Float32DType.
bool class_of(std::string_view dotted, std::string_view module, std::string_view suffix) {
  if (!dotted.starts_with(module) || dotted.size() <= module.size() + suffix.size()) return false;
  const std::string_view name = dotted.substr(module.size());
  return name.find('.') == std::string_view::npos && name.ends_with(suffix) &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
         });
}

}  // namespace

std::string global_name(std::string_view module, std::string_view name) {
  // Python 3 unpickles Python 2's names through _compat_pickle.
  if (module == "__builtin__") module = "builtins";
  if (module == "copy_reg") module = "copyreg";
  std::string dotted(module);
  dotted += '.';
  dotted += name;
  return dotted;
}

bool allowed_global(std::string_view dotted) {
  return std::binary_search(kAllowed.begin(), kAllowed.end(), dotted) || class_of(dotted, "torch.", "Storage") ||
         class_of(dotted, "numpy.dtypes.", "DType");
}

}  // namespace inferllama::scan
