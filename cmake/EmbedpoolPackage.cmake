# The Debian package (CPack DEB): tools/package.sh builds it.
#
#   /usr/bin/embedpool-node, embedpool-cli, embedpool-loadgen, ...
#   /usr/lib/<triplet>/libembedpool-*.a, /usr/include/pool, cmake and pkg-config files
#   /etc/embedpool/embedpool.ini          conffile (conf/embedpool.ini, logging
#                                         to /var/log/embedpool)
#   /lib/systemd/system/embedpool.service runs the node as user `embedpool`
#   /var/log/embedpool                    created by postinst, removed on purge
#
# The files under /etc and /lib/systemd belong to the install component
# `deb`, which is EXCLUDE_FROM_ALL: a plain `cmake --install` never writes
# outside its prefix; only CPack installs that component.

# The conffile: the documented configuration with the log in /var/log/embedpool.
file(READ ${PROJECT_SOURCE_DIR}/conf/embedpool.ini _embedpool_ini)
string(REPLACE "file = \"logs/supervisor.log\"" "file = \"/var/log/embedpool/supervisor.log\""
       _embedpool_deb_ini "${_embedpool_ini}")
if(_embedpool_deb_ini STREQUAL _embedpool_ini)
  message(FATAL_ERROR "conf/embedpool.ini has no 'file = \"logs/supervisor.log\"' line "
                      "to point at /var/log/embedpool (cmake/EmbedpoolPackage.cmake)")
endif()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${PROJECT_SOURCE_DIR}/conf/embedpool.ini)
file(WRITE ${PROJECT_BINARY_DIR}/packaging/embedpool.ini "${_embedpool_deb_ini}")

install(FILES ${PROJECT_BINARY_DIR}/packaging/embedpool.ini
        DESTINATION /etc/embedpool COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/deb/embedpool.service
        DESTINATION /lib/systemd/system COMPONENT deb EXCLUDE_FROM_ALL)

set(CPACK_PACKAGE_NAME embedpool)
set(CPACK_PACKAGE_VENDOR "embedpool")
set(CPACK_PACKAGE_CONTACT "embedpool maintainers <embedpool@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "memory-bounded, supervised text-embedding worker pool (CAF node)")
set(CPACK_PACKAGE_DESCRIPTION
    "A C++ Actor Framework node that computes text embeddings on OpenBLAS with\n\
bounded per-worker queues (credit-based flow control), supervision and an\n\
HTTP front (OpenAI/TEI shapes, Prometheus metrics). Includes the node, the\n\
command-line client, the load generator and the client library.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends from dpkg-shlibdeps (dpkg-dev) on the executables, plus what the
# maintainer scripts use.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/deb/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/deb/postinst
    ${PROJECT_SOURCE_DIR}/packaging/deb/prerm
    ${PROJECT_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Every component (the default one and `deb`) in one package.
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL Unspecified deb)
set(CPACK_STRIP_FILES ON)
include(CPack)
