// The HTTP access log (http.access-log = true): one `event=http_request` line
// per request on the "http" logger at info, with method, path, status, body
// bytes, duration and a request id. The id is the request's X-Request-Id
// header when it is a plain token (1..128 of [A-Za-z0-9._:-]), else a random
// one; it is echoed back in the response's X-Request-Id header.
//
// Thread-safety: each cpp-httplib thread serves one request at a time; the
// start time and id live in thread-local storage from `begin` to `end`.
#pragma once

#include <string>

#include <spdlog/logger.h>

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace pool::detail {

/// Before routing: notes the start time, picks the request id and sets the
/// response's X-Request-Id header.
void access_log_begin(const httplib::Request& req, httplib::Response& res);

/// After the response is written: logs the line. A request refused before
/// routing (a malformed request line, a body over http.max-body-bytes) has
/// no start time (`duration_ms=-1`) and its id is not echoed.
void access_log_end(spdlog::logger& log, const httplib::Request& req,
                    const httplib::Response& res);

}  // namespace pool::detail
