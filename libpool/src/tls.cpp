#include "pool/tls.hpp"

#include <cstdio>
#include <memory>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <caf/actor_system_config.hpp>
#include <caf/openssl/manager.hpp>

#include "pool/error.hpp"

namespace pool {

namespace {

std::string openssl_reason() {
  auto code = ERR_get_error();
  ERR_clear_error();
  if (code == 0)
    return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

caf::error refuse(const std::string& key, const std::string& file,
                  const std::string& why) {
  return make_error(pool_errc::invalid_input, key + ": " + file + ": " + why);
}

bool readable(const std::string& path) {
  if (auto* f = std::fopen(path.c_str(), "rb")) {
    std::fclose(f);
    return true;
  }
  return false;
}

int passphrase_callback(char* buf, int size, int, void* userdata) {
  auto* pass = static_cast<const std::string*>(userdata);
  if (pass == nullptr || size <= 0)
    return 0;
  auto n = std::min(static_cast<int>(pass->size()), size - 1);
  std::copy(pass->data(), pass->data() + n, buf);
  buf[n] = '\0';
  return n;
}

}  // namespace

caf::error validate_tls(const tls_section& tls) {
  if (!tls.enabled()) {
    if (!tls.key.empty() || !tls.ca_file.empty())
      return make_error(pool_errc::invalid_input,
                        "tls.certificate: required when tls.key or tls.ca-file is set");
    return caf::none;
  }
  if (tls.key.empty())
    return make_error(pool_errc::invalid_input, "tls.key: required with tls.certificate");
  if (tls.ca_file.empty())
    return make_error(pool_errc::invalid_input,
                      "tls.ca-file: required with tls.certificate (peers are verified "
                      "against it)");
  const std::pair<const char*, const std::string*> files[] = {
      {"tls.certificate", &tls.certificate},
      {"tls.key", &tls.key},
      {"tls.ca-file", &tls.ca_file},
  };
  for (auto& [key, path] : files)
    if (!readable(*path))
      return refuse(key, *path, "cannot read file");
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_method()),
                                                        SSL_CTX_free};
  if (!ctx)
    return make_error(pool_errc::invalid_input, "tls: cannot create an OpenSSL context");
  auto passphrase = tls.passphrase;
  SSL_CTX_set_default_passwd_cb(ctx.get(), passphrase_callback);
  SSL_CTX_set_default_passwd_cb_userdata(ctx.get(), &passphrase);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.certificate.c_str()) != 1)
    return refuse("tls.certificate", tls.certificate,
                  "not a PEM certificate: " + openssl_reason());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return refuse(
        "tls.key", tls.key,
        "not a usable PEM private key (wrong tls.passphrase?): " + openssl_reason());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return refuse(
        "tls.key", tls.key,
        "does not match tls.certificate " + tls.certificate + ": " + openssl_reason());
  if (SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.c_str(), nullptr) != 1)
    return refuse("tls.ca-file", tls.ca_file, "not a PEM CA file: " + openssl_reason());
  return caf::none;
}

void enable_tls(caf::actor_system_config& cfg, const tls_section& tls) {
  cfg.load<caf::openssl::manager>();
  cfg.openssl_certificate = tls.certificate;
  cfg.openssl_key = tls.key;
  cfg.openssl_cafile = tls.ca_file;
  cfg.openssl_passphrase = tls.passphrase;
}

}  // namespace pool
