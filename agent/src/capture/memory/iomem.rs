//! `/proc/iomem`: where the machine's RAM is.
//!
//! Every "System RAM" entry counts, at any nesting depth (`System RAM (kmem)` under a
//! persistent-memory region, RAM nested in a reserved window): AVML reads only the top-level
//! ones. Overlapping and adjacent ranges are merged. As non-root, the kernel shows all
//! addresses as zero, which is reported rather than read as "no RAM".

/// An inclusive physical address range, as iomem prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RamRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl RamRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IomemError {
    #[error("/proc/iomem lists no System RAM")]
    NoRam,
    #[error("/proc/iomem shows every address as zero: it must be read as root (CAP_SYS_ADMIN)")]
    Hidden,
    #[error("/proc/iomem line {0}: cannot parse {1:?}")]
    Parse(usize, String),
}

/// Parses iomem's text into sorted, merged System RAM ranges.
pub fn system_ram(text: &str) -> Result<Vec<RamRange>, IomemError> {
    let mut ranges = Vec::new();
    let mut any_nonzero = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (range, name) = line
            .trim_start()
            .split_once(" : ")
            .ok_or_else(|| IomemError::Parse(i + 1, line.to_string()))?;
        let (s, e) = range
            .split_once('-')
            .ok_or_else(|| IomemError::Parse(i + 1, line.to_string()))?;
        let start = u64::from_str_radix(s.trim(), 16)
            .map_err(|_| IomemError::Parse(i + 1, line.to_string()))?;
        let end = u64::from_str_radix(e.trim(), 16)
            .map_err(|_| IomemError::Parse(i + 1, line.to_string()))?;
        any_nonzero |= start != 0 || end != 0;
        if name.trim().starts_with("System RAM") && end >= start {
            ranges.push(RamRange { start, end });
        }
    }
    if !any_nonzero && !text.trim().is_empty() {
        return Err(IomemError::Hidden);
    }
    ranges.sort();
    let mut merged: Vec<RamRange> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(1) => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.is_empty() {
        return Err(IomemError::NoRam);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_suffixed_ram_counts_and_merges() {
        let text = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000bffff : PCI Bus 0000:00
00100000-1ffdffff : System RAM
  01000000-01ffffff : Kernel code
  02000000-0220ffff : Kernel rodata
1ffe0000-1fffffff : Reserved
100000000-17fffffff : Persistent Memory
  100000000-13fffffff : System RAM (kmem)
  140000000-17fffffff : System RAM (kmem)
";
        let r = system_ram(text).unwrap();
        assert_eq!(
            r,
            vec![
                RamRange {
                    start: 0x1000,
                    end: 0x9fbff
                },
                RamRange {
                    start: 0x100000,
                    end: 0x1ffdffff
                },
                RamRange {
                    start: 0x1_0000_0000,
                    end: 0x1_7fff_ffff
                },
            ]
        );
        assert_eq!(r[0].len(), 0x9ec00);
    }

    #[test]
    fn hidden_addresses_are_an_error_that_says_why() {
        let text = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n";
        assert_eq!(system_ram(text), Err(IomemError::Hidden));
        assert_eq!(
            system_ram("00000000-00000fff : Reserved\n"),
            Err(IomemError::NoRam)
        );
        assert!(matches!(
            system_ram("garbage\n"),
            Err(IomemError::Parse(1, _))
        ));
    }
}
