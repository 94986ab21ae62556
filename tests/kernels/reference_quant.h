// Scalar reference dequantizers written from the GGML format description, element by element,
// independent of the block structs in kernels/cpu. Used as the oracle for the optimised kernels.
#ifndef KVWIRE_TESTS_KERNELS_REFERENCE_QUANT_H_
#define KVWIRE_TESTS_KERNELS_REFERENCE_QUANT_H_

#include <cstdint>
#include <random>
#include <vector>

#include "kvwire/kernels/quant.h"

namespace kvwire::kernels::testing {

// Element i (0 <= i < n) of a row of `type` stored at `row`, computed in double.
double ReferenceElement(QuantType type, const uint8_t* row, int64_t i);

// Random, valid bytes for a row of n elements: random codes, scales drawn so values stay finite.
std::vector<uint8_t> RandomRow(QuantType type, int64_t n, std::mt19937& rng);

// Every type the kernels implement.
std::vector<QuantType> AllTypes();

}  // namespace kvwire::kernels::testing

#endif  // KVWIRE_TESTS_KERNELS_REFERENCE_QUANT_H_
