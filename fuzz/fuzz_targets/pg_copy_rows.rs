#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cdc_bridge::fuzzing::pg_copy_rows(data));
