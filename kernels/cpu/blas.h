// kernels/cpu/blas.h — BLAS threading policy of the CPU kernels (internal).
//
// The kernels split work across their own ThreadPool and call sgemm from each worker on disjoint
// output blocks, so OpenBLAS must not start threads of its own (they would oversubscribe the
// cores). UseSingleThreadedBlas() sets that once per process.
#ifndef KVWIRE_KERNELS_CPU_BLAS_H_
#define KVWIRE_KERNELS_CPU_BLAS_H_

namespace kvwire::kernels {

void UseSingleThreadedBlas();

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_CPU_BLAS_H_
