//! Kubernetes' units, in one place for every part of Capstan that shows or compares them: quantities (`500m`,
//! `128Mi`, `1e3`) parsed to milli-units, and the short human durations kubectl prints in AGE columns (`45s`,
//! `3h20m`, `4d`). The API server's tables and the terminal UI use the same functions, so they never disagree.

/// Parses a Kubernetes quantity into milli-units.
pub fn parse_quantity_millis(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let (mult_num, mult_den): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "u" => (1, 1000),
        "n" => (1, 1_000_000),
        "k" => (1000 * 1000, 1),
        "M" => (1000 * 1_000_000, 1),
        "G" => (1000 * 1_000_000_000, 1),
        "T" => (1000 * 1_000_000_000_000, 1),
        "Ki" => (1000 * 1024, 1),
        "Mi" => (1000 * 1024 * 1024, 1),
        "Gi" => (1000 * 1024 * 1024 * 1024, 1),
        "Ti" => (1000 * 1024i128.pow(4), 1),
        "Pi" => (1000 * 1024i128.pow(5), 1),
        "Ei" => (1000 * 1024i128.pow(6), 1),
        s if s.starts_with('e') || s.starts_with('E') => {
            let exp: u32 = s[1..].parse().ok()?;
            (1000 * 10i128.checked_pow(exp)?, 1)
        }
        _ => return None,
    };
    if let Some((int, frac)) = num.split_once('.') {
        let int: i128 = if int.is_empty() || int == "-" || int == "+" {
            0
        } else {
            int.parse().ok()?
        };
        let frac_digits = frac.len() as u32;
        let frac_v: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let scale = 10i128.checked_pow(frac_digits)?;
        let neg = num.starts_with('-');
        let total = int.abs() * scale + frac_v;
        let v = total * mult_num / mult_den / scale;
        Some(if neg { -v } else { v })
    } else {
        let n: i128 = num.parse().ok()?;
        Some(n * mult_num / mult_den)
    }
}

/// Millicores of a CPU quantity (`500m` -> 500, `2` -> 2000); 0 when it does not parse.
pub fn millicores(q: &str) -> i64 {
    parse_quantity_millis(q)
        .and_then(|m| i64::try_from(m).ok())
        .unwrap_or(0)
}

/// Bytes of a memory quantity (`64Mi`, `1Ti`, `1G`, `1e9`); 0 when it does not parse.
pub fn bytes(q: &str) -> i64 {
    parse_quantity_millis(q)
        .and_then(|m| i64::try_from(m / 1000).ok())
        .unwrap_or(0)
}

/// Kubernetes' short human duration: `45s`, `5m`, `3h20m`, `4d`, `2y`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{s}s")
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = mins / 60;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if days < 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    format!("{}y", days / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_millis() {
        assert_eq!(parse_quantity_millis("500m"), Some(500));
        assert_eq!(parse_quantity_millis("1"), Some(1000));
        assert_eq!(parse_quantity_millis("0.5"), Some(500));
        assert_eq!(parse_quantity_millis("1Ki"), Some(1_024_000));
        assert_eq!(parse_quantity_millis("1e3"), Some(1_000_000));
        assert_eq!(parse_quantity_millis("abc"), None);
        assert_eq!(parse_quantity_millis("12Q"), None);
    }

    #[test]
    fn memory_and_cpu_in_every_suffix() {
        assert_eq!(bytes("64Mi"), 64 << 20);
        assert_eq!(bytes("1Ti"), 1 << 40);
        assert_eq!(bytes("1T"), 1_000_000_000_000);
        assert_eq!(bytes("1Pi"), 1 << 50);
        assert_eq!(bytes("junk"), 0);
        assert_eq!(millicores("250m"), 250);
        assert_eq!(millicores("1.5"), 1500);
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(5 * 60 + 7), "5m7s");
        assert_eq!(human_duration(3 * 3600 + 20 * 60), "3h20m");
        assert_eq!(human_duration(4 * 86_400), "4d");
        assert_eq!(human_duration(3 * 365 * 86_400), "3y");
    }
}
