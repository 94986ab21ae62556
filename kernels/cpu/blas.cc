#include "kernels/cpu/blas.h"

#include <cblas.h>

#include <mutex>

namespace kvwire::kernels {

void UseSingleThreadedBlas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace kvwire::kernels
