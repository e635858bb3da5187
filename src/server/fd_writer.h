// FdWriter: a plain socket as Beast's synchronous writes see it, by its
// descriptor: one non-blocking sendmsg per call (would_block when the socket
// takes nothing now). It works whether or not an asio socket holds the
// descriptor, and completes nothing through an event loop: a write the
// socket takes at once costs one system call and no queued handler.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/error.hpp>
#include <cerrno>
#include <iterator>

namespace dyad {

struct FdWriter {
  int fd;
  template <class ConstBufferSequence>
  size_t write_some(const ConstBufferSequence& buffers, boost::beast::error_code& ec) {
    iovec iov[64];
    size_t n = 0;
    for (const auto b : boost::beast::buffers_range_ref(buffers)) {
      if (n == std::size(iov)) break;
      if (b.size() > 0) iov[n++] = {const_cast<void*>(b.data()), b.size()};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = n;
    for (;;) {
      const ssize_t sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent >= 0) {
        ec = {};
        return static_cast<size_t>(sent);
      }
      if (errno != EINTR) {
        ec.assign(errno, boost::beast::system_category());
        return 0;
      }
    }
  }
  template <class ConstBufferSequence>
  size_t write_some(const ConstBufferSequence& buffers) {
    boost::beast::error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::beast::system_error(ec);
    return n;
  }
};

}  // namespace dyad
