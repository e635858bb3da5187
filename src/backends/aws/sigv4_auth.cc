#include "backends/aws/sigv4_auth.h"

#include <spdlog/spdlog.h>

#include "core/time_format.h"

namespace dyad {

SigV4Auth::SigV4Auth(AwsCredentialSource& credentials, std::string region, std::string service, const Clock& clock)
    : credentials_(credentials), region_(std::move(region)), service_(std::move(service)), clock_(clock) {}

Status SigV4Auth::Authorize(CloudRequest& request) {
  DYAD_ASSIGN_OR_RETURN(AwsCredentials creds, credentials_.Get());
  // The request is read in place, not copied: its body may carry a credential.
  SigningParams params;
  params.region = region_;
  params.service = service_;
  params.time = std::chrono::time_point_cast<std::chrono::system_clock::duration>(clock_.WallNow() + skew());
  auto signed_req =
      signer_.SignView(SigningView{request.method, request.path, request.query, request.headers, request.body}, creds,
                   params);
  if (!signed_req.ok()) return signed_req.error();
  Cleanse(signed_req->canonical_request);  // it carries the session token (a signed header)
  for (auto& h : signed_req->headers) request.headers.push_back(std::move(h));
  return OkStatus();
}

bool SigV4Auth::OnRejected(std::string_view op, const HttpReply& reply) {
  auto server = ParseHttpDate(reply.Header("date"));
  if (!server) return false;
  auto offset = std::chrono::duration_cast<Clock::Duration>(*server - clock_.WallNow());
  skew_ns_.store(offset.count(), std::memory_order_relaxed);
  spdlog::warn("{}: clock skew of {:.1f} s against {}; signing with the server's time", op,
               std::chrono::duration<double>(offset).count(), service_);
  return true;
}

}  // namespace dyad
