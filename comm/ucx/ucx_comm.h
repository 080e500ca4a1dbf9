// The `ucx` communicator backend: one process per rank, over UCP tag
// messages (shared memory, TCP, InfiniBand/RoCE: UCX picks the transport;
// UCX_TLS / UCX_NET_DEVICES select it).
//
// Threads: each communicator owns one UCP worker and one progress thread,
// the only thread that calls into UCP. SendRecv/Barrier/Abort queue
// commands for it; Test/Wait read state that its callbacks update. So a
// transfer progresses while the rank computes (the ring's overlap needs
// that). When nothing completes, the thread backs off (10 us to 2 ms).
//
// Protocol of one message from rank s to rank d (sequence n of the pair):
//   s -> d  HEADER(n)  the MessageHeader
//   d -> s  REPLY(n)   ok, or refused plus d's expected header, sent only
//                      after d checked the header (and posted the payload
//                      receive into the user's buffer when it is ok)
//   s -> d  DATA(n)    the payload, only after an ok reply
// So a header mismatch is refused on both sides (each error prints both
// headers) and no payload of a wrong size or meaning is ever written to
// the destination. Tags hold (kind, source rank, n); n counts messages per
// ordered pair, so messages match in posting order, as communicator.h asks.
//
// Failures: endpoints use UCP_ERR_HANDLING_MODE_PEER; a peer whose
// endpoint fails fails every pending message from or to it with
// Unavailable naming the peer and step. Abort() sends an ABORT message to
// every peer (best effort) and fails local requests; a rank that receives
// one fails its own requests with Aborted naming the aborting rank.
// 300 ms after an abort (time for the ABORT messages to get out) every
// rank closes its endpoints by force, so that a payload whose receive the
// peer cancelled cannot keep a request from settling; an aborted
// communicator stays aborted.
//
// Memory: host memory only. Device buffers would be staged through pinned
// host buffers (Debian's UCX 1.13 has no CUDA transport); not done yet.
//
// Teardown: destroy every request, then (collectively, e.g. a bootstrap
// barrier) the communicator: it flushes its sends (bounded by the timeout)
// and closes its endpoints.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"

namespace ringattn::comm {

struct UcxOptions {
  // Waits on peers (destroyed pending requests, teardown). Zero:
  // DefaultTimeout() (RINGATTN_TIMEOUT_MS, else 60 s).
  absl::Duration timeout = absl::ZeroDuration();
};

// Whether this build has the UCX backend.
bool UcxBuilt();

// One communicator of Size() = bootstrap->Size() ranks; collective over the
// bootstrap (worker addresses go through bootstrap->AllGather). The
// bootstrap is used only during the call. Unimplemented when UCX is not
// built.
absl::StatusOr<std::unique_ptr<Communicator>> CreateUcxCommunicator(Bootstrap* bootstrap,
                                                                    const UcxOptions& options = {});

// "UCX 1.13.1, host memory (device memory: staged, not built)": what the
// bench prints as its transport path.
std::string UcxDescription();

}  // namespace ringattn::comm
