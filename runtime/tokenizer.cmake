# The tokenizer library (byte-level BPE, streaming decode, chat templates). Included by
# runtime/CMakeLists.txt; paths are relative to this file so the include site does not matter.
kvwire_add_library(tokenizer
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cc
          ${CMAKE_CURRENT_LIST_DIR}/tokenizer_text.cc
          ${CMAKE_CURRENT_LIST_DIR}/chat_template.cc
  PUBLIC_DEPS kvwire::base absl::status absl::statusor absl::strings absl::str_format
              absl::flat_hash_map absl::span absl::synchronization)
