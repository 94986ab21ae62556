#include <string>
#include <vector>

namespace kvwire::transport::testing {

// The fast in-process layer, built without UCX so it also runs under the sanitizers.
std::vector<std::string> ContractTransports() { return {"loopback"}; }

}  // namespace kvwire::transport::testing
