// Returns memory the node freed to the kernel.
//
// glibc keeps freed heap memory in its arenas (one per thread that allocated,
// up to 8 per core) for reuse and gives pages back only from the top of a
// heap. After a burst of large requests, every one within the node's bounds,
// the node's RSS would stay at the burst's peak although almost all of it is
// free. The trimmer's thread looks once per `period` and, when more than
// `slack` bytes are free in the arenas, calls malloc_trim(0), which returns
// every free page. Its cost (a walk over the free lists) is paid only then.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace pool::detail {

/// Large buffers (`mmap_threshold` bytes and more) get pages of their own,
/// returned when freed, for the rest of the process's life. Call once, first.
void use_own_pages_for_large_buffers(size_t mmap_threshold);

class memory_trimmer {
 public:
  memory_trimmer(std::chrono::milliseconds period, uint64_t slack);
  ~memory_trimmer();
  memory_trimmer(const memory_trimmer&) = delete;
  memory_trimmer& operator=(const memory_trimmer&) = delete;

  /// Bytes returned to the kernel so far (as glibc counted them free).
  uint64_t returned() const;

 private:
  void run();

  std::chrono::milliseconds period_;
  uint64_t slack_;
  mutable std::mutex mtx_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  uint64_t returned_ = 0;
  std::thread thread_;
};

}  // namespace pool::detail
