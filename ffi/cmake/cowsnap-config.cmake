# CMake package of libcowsnap, installed by `cargo cinstall` (ffi/Cargo.toml) as
# <prefix>/share/cmake/cowsnap/. Everything is found relative to this file, so an installed tree can move.
#
#   find_package(cowsnap 0.1 REQUIRED CONFIG)
#   target_link_libraries(app PRIVATE cowsnap::cowsnap)          # libcowsnap.so
#   target_link_libraries(app PRIVATE cowsnap::cowsnap_static)   # libcowsnap.a + its system libraries
#
# The system libraries of a static link are read from the installed cowsnap.pc (Libs.private, which
# cargo-c takes from `rustc --print native-static-libs`), so they have one source.

get_filename_component(_cowsnap_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(_cowsnap_libdirs lib lib64)
if(CMAKE_LIBRARY_ARCHITECTURE)
  list(APPEND _cowsnap_libdirs "lib/${CMAKE_LIBRARY_ARCHITECTURE}")
endif()

find_path(COWSNAP_INCLUDE_DIR cowsnap.h PATHS "${_cowsnap_prefix}/include" NO_DEFAULT_PATH)
find_library(COWSNAP_LIBRARY NAMES cowsnap PATHS "${_cowsnap_prefix}" PATH_SUFFIXES ${_cowsnap_libdirs}
  NO_DEFAULT_PATH)
find_library(COWSNAP_STATIC_LIBRARY NAMES libcowsnap.a PATHS "${_cowsnap_prefix}"
  PATH_SUFFIXES ${_cowsnap_libdirs} NO_DEFAULT_PATH)
find_file(_cowsnap_pc cowsnap.pc PATHS "${_cowsnap_prefix}" PATH_SUFFIXES
  lib/pkgconfig lib64/pkgconfig "lib/${CMAKE_LIBRARY_ARCHITECTURE}/pkgconfig" NO_DEFAULT_PATH)

set(cowsnap_FOUND TRUE)
if(NOT COWSNAP_INCLUDE_DIR OR NOT COWSNAP_LIBRARY)
  set(cowsnap_FOUND FALSE)
  set(cowsnap_NOT_FOUND_MESSAGE "cowsnap.h or libcowsnap not found under ${_cowsnap_prefix}")
  return()
endif()

if(NOT TARGET cowsnap::cowsnap)
  add_library(cowsnap::cowsnap SHARED IMPORTED)
  set_target_properties(cowsnap::cowsnap PROPERTIES
    IMPORTED_LOCATION "${COWSNAP_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${COWSNAP_INCLUDE_DIR}")
endif()

if(COWSNAP_STATIC_LIBRARY AND NOT TARGET cowsnap::cowsnap_static)
  set(_cowsnap_private "")
  if(_cowsnap_pc)
    file(STRINGS "${_cowsnap_pc}" _cowsnap_line REGEX "^Libs\\.private:")
    string(REGEX REPLACE "^Libs\\.private:[ \t]*" "" _cowsnap_line "${_cowsnap_line}")
    separate_arguments(_cowsnap_private UNIX_COMMAND "${_cowsnap_line}")
  endif()
  add_library(cowsnap::cowsnap_static STATIC IMPORTED)
  set_target_properties(cowsnap::cowsnap_static PROPERTIES
    IMPORTED_LOCATION "${COWSNAP_STATIC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${COWSNAP_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${_cowsnap_private}")
endif()
