#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cowsnap_core::testkit::fuzzing::activate_and_read(data);
});
