#include <string>
#include <vector>

namespace kvwire::transport::testing {

// Loopback, UCX over TCP and UCX over shared memory (posix, cma, self), all in one process:
// each transport sets UCX_TLS through its own UCP config, not the environment.
std::vector<std::string> ContractTransports() { return {"loopback", "tcp", "shm"}; }

}  // namespace kvwire::transport::testing
