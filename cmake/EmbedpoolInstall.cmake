# Install rules and the exported CMake package of embedpool.
#
#   find_package(embedpool 0.1 REQUIRED)              # embedpool::client
#   find_package(embedpool 0.1 REQUIRED COMPONENTS pool)  # also embedpool::pool
#
# embedpool::client needs CAF (found with the shipped FindCAF.cmake) and
# OpenSSL; embedpool::pool additionally OpenBLAS, spdlog, utf8proc,
# cpp-httplib and nlohmann-json (the node's dependencies).
include(CMakePackageConfigHelpers)

set(EMBEDPOOL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/embedpool)

install(TARGETS embedpool_client EXPORT embedpoolClientTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS libpool EXPORT embedpoolPoolTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/libpool/include/pool
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
install(EXPORT embedpoolClientTargets NAMESPACE embedpool::
        FILE embedpoolClientTargets.cmake DESTINATION ${EMBEDPOOL_CMAKE_DIR})
install(EXPORT embedpoolPoolTargets NAMESPACE embedpool::
        FILE embedpoolPoolTargets.cmake DESTINATION ${EMBEDPOOL_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/embedpoolConfig.cmake.in
  ${PROJECT_BINARY_DIR}/embedpoolConfig.cmake INSTALL_DESTINATION ${EMBEDPOOL_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/embedpoolConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/embedpoolConfig.cmake
              ${PROJECT_BINARY_DIR}/embedpoolConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
        DESTINATION ${EMBEDPOOL_CMAKE_DIR})

# pkg-config, relocatable: the prefix is found from the .pc file's own place.
file(RELATIVE_PATH EMBEDPOOL_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" EMBEDPOOL_PC_TO_PREFIX "${EMBEDPOOL_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/embedpool-client.pc.in
               ${PROJECT_BINARY_DIR}/embedpool-client.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/embedpool-client.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The documented configuration, as an example (the Debian package also puts
# it in /etc/embedpool, see EmbedpoolPackage.cmake).
install(FILES ${PROJECT_SOURCE_DIR}/conf/embedpool.ini
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/embedpool/examples)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/embedpool)
