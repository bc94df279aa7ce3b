//! The LiME and ELF core readers of the memory checks (`cargo xtask vm memory`, `bench
//! memory`): a capture gone wrong must be an error naming the offset, never a panic.

use super::{shape_of, Target, MIB};
use cairn_harness::memimage::{elf_loads, lime_ranges};
use std::io::Cursor;
use std::time::Duration;

fn lime(data: &[u8]) -> u64 {
    let r = lime_ranges(&mut Cursor::new(data), data.len() as u64);
    if let Ok(ranges) = &r {
        for &(s, e, off) in ranges {
            assert!(s <= e, "a LiME range ends before it starts");
            assert!(off <= data.len() as u64, "a LiME range starts past the end");
        }
    }
    shape_of(&r, |v| format!("{}", v.len().min(3)))
}

fn elf(data: &[u8]) -> u64 {
    let r = elf_loads(&mut Cursor::new(data));
    shape_of(&r, |v| format!("{}", v.len().min(3)))
}

const LIME_DICT: &[&[u8]] = &[
    b"EMiL",
    &[1, 0, 0, 0],
    &[0xff; 8],
    &[0; 8],
    &[0, 0x10, 0, 0, 0, 0, 0, 0],
];

const ELF_DICT: &[&[u8]] = &[
    b"\x7fELF\x02\x01\x01\x00",
    &[4, 0],    // ET_CORE
    &[0x3e, 0], // x86-64
    &[1, 0, 0, 0],
    &[4, 0, 0, 0],
    &[0x38, 0],
    &[0xff, 0xff],
    &[0xff; 8],
];

pub fn targets() -> Vec<Target> {
    let base = Target {
        name: "lime",
        about: "LiME v1 range headers (harness::memimage::lime_ranges)",
        max_len: 16 * 1024,
        timeout: Duration::from_secs(5),
        alloc_floor: 8 * MIB,
        alloc_per_byte: 64,
        dict: LIME_DICT,
        run: lime,
    };
    vec![
        Target {
            name: "elf_core",
            about: "ELF64 core PT_LOAD segments (harness::memimage::elf_loads)",
            dict: ELF_DICT,
            run: elf,
            ..base
        },
        base,
    ]
}
