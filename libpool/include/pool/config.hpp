// Node configuration: every key of conf/embedpool.ini with its default. Values
// come from the INI file (`--config-file=PATH`, CAF's syntax: `[section]`,
// `key=value`, strings in quotes, durations like `10ms`, `2s`, `1min`) and are
// overridden by `--section.key=value` on the command line. Unknown keys and
// values of the wrong type are refused with a message naming the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>
#include <caf/timespan.hpp>

namespace pool {

/// `[node]`
struct node_section {
  std::string host = "127.0.0.1";   // node.host: address the gateway binds
  uint16_t port = 4242;             // node.port: 0 picks a free port
  std::string role = "standalone";  // node.role: standalone | worker
  /// node.join: supervisors a worker node lends its workers to, as
  /// "HOST:PORT" entries tried in turn (one string with commas, or a list).
  std::vector<std::string> join;
  /// node.name: how supervisors call this worker node; "" = the host name
  /// plus a random suffix (never the pid: it would help peers guess the
  /// node's id).
  std::string name;
  /// node.allow-insecure: permit a non-loopback node.host without TLS.
  bool allow_insecure = false;
  /// node.max-unread-bytes-per-peer (MiB): replies a peer connection may hold
  /// unwritten because the peer does not read; past it the peer's requests get
  /// `overloaded`, past a quarter more (at least 1 MiB) the connection is
  /// closed. 0 = no bound.
  uint32_t max_unread_mib = 16;
  /// node.max-inbox-bytes (MiB): messages from peers waiting in the gateway's
  /// mailbox, a quarter of it per peer past its first message; past it they
  /// are shed (requests get `overloaded`). Keep it above
  /// the largest request (pool.max-batch-items × pool.max-text-bytes) or such
  /// requests are always shed. 0 = no bound.
  uint32_t max_inbox_mib = 24;
};

/// `[tls]`: mutual TLS between nodes and peers through CAF's openssl module.
/// TLS is on when `certificate` is set; then `key` and `ca-file` are required
/// and peers must present a certificate signed by that CA.
struct tls_section {
  std::string certificate;  // tls.certificate: PEM certificate (chain) of this process
  std::string key;          // tls.key: PEM private key of that certificate
  std::string ca_file;      // tls.ca-file: PEM CA that signs every trusted peer
  std::string passphrase;   // tls.passphrase: of the key, if encrypted
  bool enabled() const { return !certificate.empty(); }
};

/// What the supervisor does with a request when no worker has credit.
enum class overload_policy {
  /// Park it in the bounded pending queue until credit returns or its deadline
  /// passes; when that queue is full, answer `overloaded`.
  wait,
  /// Answer `overloaded` at once.
  reject,
};

/// `[pool]`
struct pool_section {
  uint32_t workers = 2;  // pool.workers: worker actors per node
  uint32_t embed_queue_capacity =
      100;  // pool.embed-queue-capacity: embed credits per worker
  uint32_t batch_queue_capacity =
      50;  // pool.batch-queue-capacity: batch credits per worker
  uint32_t pending_capacity =
      1000;  // pool.pending-capacity: parked requests (policy wait)
  overload_policy policy = overload_policy::wait;  // pool.overload-policy: wait | reject
  caf::timespan request_timeout = std::chrono::seconds(30);  // pool.request-timeout
  uint32_t max_attempts = 3;        // pool.max-attempts: dispatches per request
  uint32_t max_text_bytes = 65536;  // pool.max-text-bytes
  uint32_t max_batch_items = 256;   // pool.max-batch-items
  uint32_t micro_batch_texts = 64;  // pool.micro-batch-texts: texts per BLAS call
  /// pool.inline-compute: a chunk estimated to take at most this long is
  /// embedded on the scheduler thread that runs the worker, without a thread
  /// hand-off; longer ones on the worker's own compute thread. 0 = always
  /// the compute thread.
  caf::timespan inline_compute = std::chrono::microseconds(100);
  caf::timespan restart_backoff = std::chrono::milliseconds(100);  // pool.restart-backoff
  caf::timespan restart_backoff_max =
      std::chrono::seconds(5);  // pool.restart-backoff-max
  uint32_t max_restarts = 5;    // pool.max-restarts: per slot within the window
  caf::timespan restart_window = std::chrono::seconds(60);  // pool.restart-window
  uint32_t max_abandoned = 8;  // pool.max-abandoned: stuck threads left behind
  caf::timespan drain_timeout = std::chrono::seconds(30);  // pool.drain-timeout
  /// pool.min-workers: local workers never evicted; 0 = min(pool.workers,
  /// pool.max-workers). See `worker_limits`.
  uint32_t min_workers = 0;
  /// pool.max-workers: most local workers after scaling up; 0 =
  /// max(pool.workers, pool.min-workers).
  uint32_t max_workers = 0;
  /// pool.scale-up-queue-depth: requests queued per serving worker (pending
  /// plus credits in use, divided by the ready workers) above which the pool
  /// grows.
  uint32_t scale_up_queue_depth = 4;
  /// pool.scale-up-window: the depth must stay above the threshold this long
  /// before one worker is added (and again before the next one).
  caf::timespan scale_up_window = std::chrono::seconds(2);
  /// pool.idle-cooldown: a worker holding no work for this long is evicted
  /// (never below the minimum).
  caf::timespan idle_cooldown = std::chrono::seconds(60);
  /// pool.memory-budget: MiB that weights plus worker buffers of every model
  /// of the node may take; 0 = no budget.
  uint64_t memory_budget_mib = 0;
  /// pool.max-queued-bytes: MiB of request text the node holds at once, from
  /// the gateway's admission until the request is answered and no worker
  /// holds it any more, across all models (the default model's value
  /// counts); past it requests are answered `overloaded`. 0 = no bound.
  uint64_t max_queued_bytes_mib = 256;
};

/// The resolved worker limits of a pool: `min <= initial <= max`, all >= 1.
struct worker_limits {
  uint32_t min = 0;
  uint32_t initial = 0;  // workers started with the node
  uint32_t max = 0;
};

/// Resolves pool.min-workers / pool.max-workers (0 = derived from
/// pool.workers, so that a pool configured only with pool.workers keeps
/// exactly that many); an error names the key when min > max.
caf::expected<worker_limits> resolve_worker_limits(const pool_section& pool,
                                                   const std::string& prefix = "pool");

/// `[heartbeat]`
struct heartbeat_section {
  caf::timespan interval = std::chrono::seconds(1);  // heartbeat.interval
  caf::timespan timeout = std::chrono::seconds(5);   // heartbeat.timeout
};

/// `[cluster]`: what worker nodes that lend workers to this node may hold.
struct cluster_section {
  /// cluster.max-workers-per-node: most workers one worker node may lend at
  /// once; a join past it is refused whole (nothing of it is added).
  uint32_t max_workers_per_node = 64;
  /// cluster.lost-node-expiry: slots of a lost worker node are freed (and may
  /// be taken by any node) after this long, so the slot table cannot fill up
  /// for good.
  caf::timespan lost_node_expiry = std::chrono::seconds(60);
};

/// `[status]`
struct status_section {
  /// status.max-age: status and metrics requests are answered from a
  /// snapshot at most this old, so a flood of them costs the supervisor one
  /// question per max-age.
  caf::timespan max_age = std::chrono::milliseconds(100);
};

/// `[model]`
struct model_config {
  /// model.name: what requests call the default model; "" = the embedder's
  /// name (hash-<dim>, or the bert model directory's name).
  std::string name;
  std::string kind = "hash";     // model.kind: hash | bert
  std::string path;              // model.path: sentence-transformers directory (bert)
  uint32_t dim = 384;            // model.dim: output dimension (hash)
  uint32_t hash_buckets = 4096;  // model.hash-buckets: feature-hashing buckets (hash)
  uint32_t blas_threads = 1;     // model.blas-threads: OpenBLAS threads
  /// model.truncate: a text longer than the model's input limit is cut to it
  /// (true, as sentence-transformers does) or refused with too_large (false).
  bool truncate = true;
  /// model.matryoshka: the model was trained so that its leading dimensions
  /// are an embedding of their own (Matryoshka); OpenAI's `dimensions` may
  /// then ask for fewer (truncated and renormalised). False refuses them.
  bool matryoshka = false;
};

/// `[models.NAME]`: a model the node serves besides the default `[model]`.
/// Keys: kind, path, dim, hash-buckets, truncate, matryoshka (as in `[model]`) and
/// workers, min-workers, max-workers, embed-queue-capacity, batch-queue-capacity,
/// pending-capacity (as in `[pool]`); every other setting is the node's.
struct named_model {
  std::string name;  // as listed in models.names
  model_config model;
  /// `[pool]` with this model's overrides applied.
  pool_section pool;
};

/// Most models one node serves (the default one included).
constexpr size_t max_models = 16;

/// `[log]`
struct log_section {
  /// log.level: trace|debug|info|warning|error|critical|off, as the lines
  /// print them ("warn" is accepted for warning).
  std::string level = "info";
  std::string file = "logs/supervisor.log";  // log.file: "" disables the file sink
  /// log.max-size: rotate log.file past this many MiB (to FILE.1 .. FILE.N,
  /// N = log.max-files, the index before the extension); 0 = never rotate
  /// (an external logrotate may move the file, then SIGHUP reopens it).
  uint32_t max_size_mib = 0;
  uint32_t max_files = 5;       // log.max-files: rotated files kept; 0 = none
  std::string format = "text";  // log.format: text | json
  bool console = true;          // log.console: also log to stderr
  caf::timespan stats_interval = std::chrono::seconds(10);  // log.stats-interval; 0 = off
};

/// `[fault]` drills; all off by default. Never enable in production.
struct fault_section {
  caf::timespan compute_delay{0};  // fault.compute-delay: added per text
  uint32_t crash_every = 0;        // fault.crash-every: worker crashes on every Nth job
  std::string hang_marker;  // fault.hang-marker: a text containing it hangs the worker
};

/// `[http]`: the optional HTTP front (health, metrics, OpenAI- and TEI-shaped
/// embeddings). Its requests go through the gateway like any peer's.
struct http_section {
  std::string host = "127.0.0.1";  // http.host: address the HTTP server binds
  int32_t port = -1;               // http.port: -1 = off, 0 = pick a free port
  uint32_t threads = 4;            // http.threads: requests handled at once
  /// http.max-connections: connections open at once; a connection past them
  /// is answered at once (503, or 200 for GET /health/live) and closed.
  uint32_t max_connections = 64;
  uint32_t max_body_bytes = 4 * 1024 * 1024;  // http.max-body-bytes: larger -> 413
  /// http.access-log: one `event=http_request` line per request (info, the
  /// "http" logger), X-Request-Id echoed back.
  bool access_log = false;
  /// http.read-timeout: total time to read one request's headers and body,
  /// from its first byte (not per read); later -> 408 and the connection
  /// closes.
  caf::timespan read_timeout = std::chrono::seconds(10);
  bool enabled() const { return port >= 0; }
};

/// Everything a node reads at start.
struct node_config {
  node_section node;
  pool_section pool;
  heartbeat_section heartbeat;
  cluster_section cluster;
  status_section status;
  model_config model;
  /// models.names: the other models, each configured in `[models.NAME]`;
  /// resolved here in that order after parsing.
  std::vector<named_model> models;
  log_section log;
  fault_section fault;
  tls_section tls;
  http_section http;
  /// Options of CAF's own sections (`scheduler`, `middleman`, ...) as
  /// `--section.key=value` arguments for `caf::actor_system_config::parse`.
  std::vector<std::string> caf_args;
  std::string config_file;  // the file read, or "" for none
};

/// Result of parsing a command line.
struct parsed_args {
  node_config config;
  bool help = false;  // --help / -h was given
};

/// Parses `--config-file=PATH`, then the file, then the remaining
/// `--section.key=value` arguments. Errors name the key and the source.
caf::expected<parsed_args> parse_node_args(const std::vector<std::string>& args);

/// What requests call the default model: model.name; "" until the node has
/// loaded the embedder, whose name it then takes.
std::string default_model_name(const node_config& cfg);

/// Parses "HOST:PORT" ("[::1]:4242" for IPv6); errors name `key` and the text.
caf::expected<std::pair<std::string, uint16_t>> parse_host_port(const std::string& text,
                                                                const std::string& key);

/// Usage text listing every key with its default.
std::string node_usage(const std::string& program);

}  // namespace pool
