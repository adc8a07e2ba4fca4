# Version of the installed libcowsnap for find_package(cowsnap <version>), read from the installed header
# (COWSNAP_VERSION_STRING, generated from Cargo.toml): one source. Compatible: the same SONAME, that is
# the same major.minor while the major is 0 (a 0.x minor may break the ABI), the same major from 1.0 on,
# and not older than the version asked for.

get_filename_component(_cowsnap_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
file(STRINGS "${_cowsnap_prefix}/include/cowsnap.h" _cowsnap_v REGEX "^#define COWSNAP_VERSION_STRING ")
string(REGEX REPLACE "^#define COWSNAP_VERSION_STRING \"([0-9.]+)\".*" "\\1" PACKAGE_VERSION "${_cowsnap_v}")

set(PACKAGE_VERSION_COMPATIBLE FALSE)
set(PACKAGE_VERSION_EXACT FALSE)
if(NOT PACKAGE_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
  return()
endif()
if(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  return()
endif()
string(REPLACE "." ";" _cowsnap_parts "${PACKAGE_VERSION}")
list(GET _cowsnap_parts 0 _cowsnap_major)
list(GET _cowsnap_parts 1 _cowsnap_minor)
if(NOT PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION
   AND PACKAGE_FIND_VERSION_MAJOR EQUAL _cowsnap_major
   AND (_cowsnap_major GREATER 0 OR PACKAGE_FIND_VERSION_MINOR EQUAL _cowsnap_minor))
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
if(PACKAGE_VERSION VERSION_EQUAL PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_EXACT TRUE)
endif()
