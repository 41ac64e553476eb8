// The imports a model's pickle may make: what torch.save and numpy write for tensors, storages, dtypes and
// plain containers. Anything else a pickle imports (os.system, builtins.eval, a class of some package) is a
// finding: unpickling imports it and may call it.
#pragma once
#include <string>
#include <string_view>

namespace inferllama::scan {

// `module` and `name` as a pickle names them (GLOBAL's two lines, STACK_GLOBAL's two strings); Python 2's
// module names (__builtin__, copy_reg) are taken as Python 3 maps them. The dotted name "module.name".
std::string global_name(std::string_view module, std::string_view name);
// Whether a dotted name from global_name() is on the allowlist.
bool allowed_global(std::string_view dotted);

}  // namespace inferllama::scan
