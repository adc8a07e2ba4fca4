// The header from C++17: compiles with -Wall -Werror, and a few calls work.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cowsnap.h"

namespace {

struct VolumeDeleter {
  void operator()(cowsnap_volume *v) const { cowsnap_volume_free(v); }
};
using Volume = std::unique_ptr<cowsnap_volume, VolumeDeleter>;

std::string last_error() {
  std::vector<char> buf(cowsnap_last_error(nullptr, 0) + 1);
  cowsnap_last_error(buf.data(), buf.size());
  return buf.data();
}

int fails = 0;
void expect(bool ok, const char *what) {
  if (!ok) {
    std::fprintf(stderr, "test_cpp: %s\n", what);
    ++fails;
  }
}

}  // namespace

int main() {
  static_assert(COWSNAP_VERSION_MAJOR >= 0, "version macros");
  cowsnap_volume *raw = nullptr;
  expect(cowsnap_volume_create_mem(1 << 20, &raw) == COWSNAP_OK, "create");
  Volume vol(raw);
  cowsnap_snapshot_create_options opts;
  expect(cowsnap_snapshot_create_options_init(&opts, sizeof opts) == COWSNAP_OK, "options");
  opts.cow_size = 256 * 1024;
  opts.store = COWSNAP_STORE_TRANSIENT;
  uint32_t id = 0;
  expect(cowsnap_snapshot_create_with(vol.get(), &opts, &id) == COWSNAP_OK, "snapshot");
  std::vector<uint8_t> data(4096, 0x5a), back(4096);
  expect(cowsnap_volume_write(vol.get(), 0, data.data(), data.size()) == COWSNAP_OK, "write");
  expect(cowsnap_snapshot_read(vol.get(), id, 0, back.data(), back.size()) == COWSNAP_OK, "read");
  expect(back[0] == 0, "snapshot keeps the old data");
  cowsnap_snapshot_info info{};
  info.struct_size = sizeof info;
  expect(cowsnap_snapshot_get_info(vol.get(), id, &info) == COWSNAP_OK, "info");
  expect(info.state == COWSNAP_STATE_ACTIVE && info.exceptions == 1, "info values");
  expect(info.struct_size == sizeof info, "info size");
  // The first status struct still works; "struct": the function of the same name hides the type.
  struct cowsnap_snapshot_status st;
  expect(cowsnap_snapshot_status(vol.get(), id, &st) == COWSNAP_OK, "status");
  expect(st.state == COWSNAP_STATE_ACTIVE && st.exceptions == 1, "status values");
  cowsnap_result r = cowsnap_snapshot_delete(vol.get(), id + 10);
  expect(r == COWSNAP_ERR_UNKNOWN_SNAPSHOT, "unknown id");
  expect(last_error().find("no snapshot with id") != std::string::npos, "message");
  expect(std::strcmp(cowsnap_version(), COWSNAP_VERSION_STRING) == 0, "version");
  if (fails) return 1;
  std::printf("test_cpp: ok\n");
  return 0;
}
