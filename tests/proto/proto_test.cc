// The API surface of ARCHITECTURE.md §1/§4: services, their streaming shape, and wire round trips.
#include <gtest/gtest.h>

#include "kvwire/v1/control_plane.grpc.pb.h"
#include "kvwire/v1/decode.grpc.pb.h"
#include "kvwire/v1/prefill.grpc.pb.h"

namespace kvwire {
namespace {

const google::protobuf::MethodDescriptor* Method(const google::protobuf::ServiceDescriptor* s,
                                                  const char* name) {
  const auto* m = s->FindMethodByName(name);
  EXPECT_NE(m, nullptr) << s->full_name() << "." << name;
  return m;
}

TEST(ProtoSurface, ControlPlaneMethodsAndStreaming) {
  const auto* s = v1::GenerateRequest::descriptor()->file()->FindServiceByName("ControlPlane");
  ASSERT_NE(s, nullptr);
  for (const char* name : {"Generate", "SetBudgetPolicy", "GetBudgetPolicy", "ListNodes",
                           "GetStats", "Register", "Heartbeat"}) {
    Method(s, name);
  }
  EXPECT_TRUE(Method(s, "Generate")->server_streaming());
  EXPECT_FALSE(Method(s, "Generate")->client_streaming());
  EXPECT_FALSE(Method(s, "SetBudgetPolicy")->server_streaming());
}

TEST(ProtoSurface, PrefillAndDecodeServices) {
  const auto* prefill = v1::PrefillRequest::descriptor()->file()->FindServiceByName("PrefillService");
  ASSERT_NE(prefill, nullptr);
  Method(prefill, "Prefill");
  const auto* decode = v1::ReserveRequest::descriptor()->file()->FindServiceByName("DecodeService");
  ASSERT_NE(decode, nullptr);
  EXPECT_EQ(Method(decode, "Reserve")->output_type()->name(), "Grant");
  EXPECT_TRUE(Method(decode, "Decode")->server_streaming());
  Method(decode, "Release");
}

TEST(ProtoSurface, GenerateRequestRoundTrips) {
  v1::GenerateRequest req;
  req.set_tenant("acme");
  auto* msg = req.mutable_chat()->add_messages();
  msg->set_role("user");
  msg->set_content("What is KV cache compression?");
  req.mutable_sampling()->set_max_tokens(64);
  req.mutable_budget()->set_kept_fraction(0.2f);
  std::string bytes;
  ASSERT_TRUE(req.SerializeToString(&bytes));
  v1::GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  EXPECT_EQ(back.tenant(), "acme");
  EXPECT_EQ(back.input_case(), v1::GenerateRequest::kChat);
  EXPECT_EQ(back.budget().kind_case(), v1::Budget::kKeptFraction);
  EXPECT_FLOAT_EQ(back.budget().kept_fraction(), 0.2f);
  EXPECT_EQ(back.chat().messages(0).content(), "What is KV cache compression?");
}

TEST(ProtoSurface, GarbageDoesNotParseAsGrant) {
  v1::Grant grant;
  const std::string garbage("\xff\xff\xff\xff\xff\x0f", 6);
  EXPECT_FALSE(grant.ParseFromString(garbage));
}

}  // namespace
}  // namespace kvwire
