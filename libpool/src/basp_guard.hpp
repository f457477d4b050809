// Bounds on raw BASP frames, for CAF 0.17.6 (see basp_guard.cpp).
//
// CAF 0.17 reads a frame's payload into a buffer of the size its header
// announces (up to 4 GiB, allocated and zeroed before a byte arrives) and
// deserializes messages nested in messages recursively without a limit (a
// message nested 30,000 deep overflows the stack: SIGSEGV). It offers no
// setting for either. libpool replaces two functions of CAF's shared
// libraries that every frame passes through, `caf::io::basp::valid(header)`
// and `caf::message::load(deserializer&)`, exported by every executable that
// links libpool (libpool/src/exported_symbols.list), so that:
//  - a header announcing more than `max_frame_bytes` is invalid: the broker
//    closes the connection before allocating anything;
//  - a message nested deeper than `max_message_depth` fails to deserialize:
//    the frame is dropped.
#pragma once

#include <cstdint>

namespace pool::detail {

/// Default bound on nesting: a pool message holds at most an error that
/// holds a message, so 3 levels are used; 32 leaves room.
constexpr uint32_t default_max_message_depth = 32;

/// Sets the largest payload a BASP header may announce in this process
/// (default: no bound beyond CAF's 4 GiB). Thread-safe.
void set_max_frame_bytes(uint32_t bytes);
uint32_t max_frame_bytes();

/// Sets the deepest nesting of messages accepted (default 32). Thread-safe.
void set_max_message_depth(uint32_t depth);

/// True when CAF's calls resolve to the guards (the executable exports them).
bool basp_guard_bound();

/// Frames refused so far: headers over the bound; messages nested too deep.
uint64_t oversized_frames();
uint64_t too_deep_messages();

}  // namespace pool::detail
