// EventedUpstream: the /v1 upstream exchange driven on the server's I/O
// threads (DESIGN.md §12), so that no thread waits for an upstream: the
// request is written, the answer read and handed to the sink, the next read
// made only once the client has taken what the sink wrote (backpressure).
//
// It makes the calls an I/O thread can make without waiting on anything but
// its sockets (Supports): plain HTTP to an IP literal
// (IsPlainNumericTarget), a body of at most kMaxBody. Every other call goes
// to UpstreamClient on a pool thread. The rules are UpstreamClient's
// (transport/upstream_client.h), and so are its errors:
//  - the request written as it writes it (transport/upstream_wire.h);
//  - no connection to a link-local or metadata address;
//  - redirects handed on, never followed;
//  - connections kept alive per origin, at most max_idle_per_host idle and
//    none idle longer than max_idle_age; one on which anything arrived while
//    it was idle (a close, a reset, stray bytes) is dropped before use;
//  - a request on a kept connection that closes before any byte of the
//    answer, while the request was being sent or within 250 ms of it, is
//    sent once more on a new connection (the upstream closed it idle);
//  - connect, first-byte, idle and total timeouts: one timer per call,
//    moved on lazily (a read does not re-arm it);
//  - Cancel (the client hung up) stops the call; a stopped or failed call's
//    connection is closed, never kept.
// Thread-safe: calls run on any executors (each call's handlers on its own).
// Asio stays in server/.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "core/result.h"
#include "transport/upstream_client.h"

namespace dyad {

class EventedUpstream {
 public:
  struct Options {
    size_t max_idle_per_host = 64;
    std::chrono::milliseconds max_idle_age{118000};
  };
  // A request body larger than this goes to the pool: with it written whole
  // before the answer is read, an upstream that answers early and closes
  // would cost its answer (UpstreamClient reads while it sends).
  static constexpr size_t kMaxBody = 64 * 1024;

  // After a read of the upstream that called the sink: the call reads on
  // once `resume(true)` is called (the client took what the sink wrote),
  // and stops (kCancelled) on `resume(false)` (the client has gone).
  using Pause = std::function<void(std::function<void(bool)> resume)>;
  // Once, on the call's executor, never from within Start (it may be from
  // within Begin).
  using Done = std::function<void(Status)>;

  class Call {
   public:
    virtual ~Call() = default;
    // On the call's executor, once: the call begins (Start only makes it, so
    // that its owner holds it before any handler of it runs).
    virtual void Begin() = 0;
    // On the call's executor: the client hung up; Done hears kCancelled.
    virtual void Cancel() = 0;
  };

  explicit EventedUpstream(Options options);
  ~EventedUpstream();
  EventedUpstream(const EventedUpstream&) = delete;
  EventedUpstream& operator=(const EventedUpstream&) = delete;

  // Whether Start can make this call (above).
  bool Supports(const UpstreamRequest& request);
  // Makes the call, which Begin() starts; null when this cannot make it
  // (Supports): the caller makes it elsewhere. Its handlers, the sink's
  // calls, `pause` and `done` run on `executor` (the connection's event
  // loop). `request` and `sink` must outlive `done`.
  std::shared_ptr<Call> Start(const UpstreamRequest& request, UpstreamSink& sink, boost::asio::any_io_executor executor,
                              Pause pause, Done done);
  // Kept connections, for tests.
  size_t IdleConnections();
  // Closes the kept connections and keeps none from then on. The
  // destructor does it: destroy this before the loops its calls ran on (a
  // call still queued there may hold the client's state past this object,
  // and a kept connection's socket must not outlive its loop).
  void CloseIdle();

  struct Impl;  // in evented_upstream.cc

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace dyad
