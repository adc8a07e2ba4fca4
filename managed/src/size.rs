//! LVM-style sizes: `512M`, `4K`, `1G`, `1.5G`, `+64M`, `100s` (sectors), or plain bytes.

/// A size argument, possibly relative (`+64M`), as `lvextend -L` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SizeArg {
    Absolute(u64),
    Plus(u64),
}

impl SizeArg {
    /// The resulting size when applied to `current`.
    pub fn apply(self, current: u64) -> Result<u64, String> {
        match self {
            SizeArg::Absolute(n) => Ok(n),
            SizeArg::Plus(n) => current
                .checked_add(n)
                .ok_or_else(|| "size overflows 64 bits".to_string()),
        }
    }
}

/// Parses a size with an optional binary suffix (K, M, G, T, P, E; `KiB`/`KB`/`k` accepted alike;
/// `s` counts 512-byte sectors). A plain number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("bad size {s:?}: expected a number like 512M"));
    }
    let unit_l = unit.to_ascii_lowercase();
    let unit_l = unit_l
        .strip_suffix("ib")
        .or_else(|| unit_l.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit_l);
    let mult: u64 = match unit_l {
        "" | "b" => 1,
        "s" => 512,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        "e" => 1 << 60,
        _ => {
            return Err(format!(
                "bad size {s:?}: unknown unit {unit:?} (use K, M, G, T, s or plain bytes)"
            ))
        }
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(format!("bad size {s:?}"));
    }
    let too_big = || format!("size {s:?} is too large");
    let int_v: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| format!("bad size {s:?}"))?
    };
    let mut bytes = int_v.checked_mul(mult).ok_or_else(too_big)?;
    if !frac.is_empty() {
        if frac.contains('.') || frac.len() > 18 {
            return Err(format!("bad size {s:?}"));
        }
        let f: u128 = frac.parse().map_err(|_| format!("bad size {s:?}"))?;
        let scale = 10u128.pow(frac.len() as u32);
        let part = f * mult as u128;
        if part % scale != 0 {
            return Err(format!("size {s:?} is not a whole number of bytes"));
        }
        bytes = bytes
            .checked_add((part / scale) as u64)
            .ok_or_else(too_big)?;
    }
    Ok(bytes)
}

/// Parses `SIZE` or `+SIZE`.
pub fn parse_size_arg(s: &str) -> Result<SizeArg, String> {
    match s.trim().strip_prefix('+') {
        Some(rest) => parse_size(rest).map(SizeArg::Plus),
        None => parse_size(s).map(SizeArg::Absolute),
    }
}

/// lvs-style human size: `512.00m`, `1.00g`, `4.00k`, `100.00b`... (binary units).
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("p", 1 << 50),
        ("t", 1 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ];
    for (u, m) in UNITS {
        if bytes >= m {
            return format!("{:.2}{u}", bytes as f64 / m as f64);
        }
    }
    format!("{bytes}.00b")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("8s"), Ok(4096));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999E").is_err());
        assert_eq!(parse_size_arg("+64M"), Ok(SizeArg::Plus(64 << 20)));
        assert_eq!(parse_size_arg("64M"), Ok(SizeArg::Absolute(64 << 20)));
        assert_eq!(human(512 << 20), "512.00m");
        assert_eq!(human(3 << 29), "1.50g");
        assert_eq!(human(100), "100.00b");
    }
}
