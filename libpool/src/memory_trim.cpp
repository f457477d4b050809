#include "memory_trim.hpp"

#include <malloc.h>

namespace pool::detail {

void use_own_pages_for_large_buffers(size_t mmap_threshold) {
  // Fixing the threshold also stops glibc from raising it after the first
  // large free, which would put later large buffers in its heaps.
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold));
}

memory_trimmer::memory_trimmer(std::chrono::milliseconds period, uint64_t slack)
    : period_(period), slack_(slack) {
  thread_ = std::thread{[this] { run(); }};
}

memory_trimmer::~memory_trimmer() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

uint64_t memory_trimmer::returned() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return returned_;
}

void memory_trimmer::run() {
  std::unique_lock<std::mutex> guard{mtx_};
  while (!stop_cv_.wait_for(guard, period_, [this] { return stop_; })) {
    guard.unlock();
    auto info = mallinfo2();
    uint64_t freed = 0;
    if (info.fordblks > slack_ && malloc_trim(0) != 0)
      freed = info.fordblks;
    guard.lock();
    returned_ += freed;
  }
}

}  // namespace pool::detail
