//! Kubernetes' name rules: DNS-1123 labels and subdomains, DNS-1035 labels (Services), qualified names (label and
//! annotation keys), label values, port names and cron schedules. Each error displays as Kubernetes words it, so a
//! `FieldError` built from one reads like the real API server's.

use thiserror::Error;

/// Why a name breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be no more than {0} characters")]
    TooLong(usize),
    #[error("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")]
    Label,
    #[error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]
    Subdomain,
    #[error("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")]
    Dns1035,
    /// The prefix of a qualified name (`example.com/` in `example.com/key`) is not a DNS-1123 subdomain.
    #[error("prefix part {0}")]
    Prefix(Box<NameError>),
    #[error("name part must be non-empty and no more than 63 characters")]
    NamePartLength,
    #[error("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")]
    NamePart,
    #[error("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")]
    LabelValue,
    #[error("must be no more than 15 characters, contain only lower case alphanumerics and '-', and contain at least one letter")]
    PortName,
    #[error("may not be '.' or '..'")]
    DotName,
    #[error("may not contain '{0}'")]
    PathCharacter(char),
}

/// A name that only has to be a path segment (RBAC roles and bindings, like `system:aggregate-to-view`).
pub fn path_segment(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s == "." || s == ".." {
        return Err(NameError::DotName);
    }
    match s.chars().find(|c| *c == '/' || *c == '%') {
        Some(c) => Err(NameError::PathCharacter(c)),
        None => Ok(()),
    }
}

fn lower_alnum_or_dash(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Alphanumerics, '-', '_' and '.', starting and ending alphanumeric (label keys' name part, label values).
fn alnum_dash_underscore_dot(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, at most 63 characters.
pub fn dns1123_label(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 63 {
        return Err(NameError::TooLong(63));
    }
    if !lower_alnum_or_dash(s) {
        return Err(NameError::Label);
    }
    Ok(())
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 253 {
        return Err(NameError::TooLong(253));
    }
    if !s
        .split('.')
        .all(|l| !l.is_empty() && lower_alnum_or_dash(l))
    {
        return Err(NameError::Subdomain);
    }
    Ok(())
}

/// DNS-1035 label (Service names): like a DNS-1123 label but starting with a letter.
pub fn dns1035_label(s: &str) -> Result<(), NameError> {
    dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(NameError::Dns1035);
    }
    Ok(())
}

/// A qualified name (label and annotation keys): an optional DNS-1123 subdomain prefix and '/', then a name part.
pub fn qualified_name(s: &str) -> Result<(), NameError> {
    let name = match s.rsplit_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|e| NameError::Prefix(Box::new(e)))?;
            name
        }
        None => s,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(NameError::NamePartLength);
    }
    if !alnum_dash_underscore_dot(name) {
        return Err(NameError::NamePart);
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err(NameError::TooLong(63));
    }
    if !alnum_dash_underscore_dot(s) {
        return Err(NameError::LabelValue);
    }
    Ok(())
}

/// Checks an object name for a kind, as Kubernetes does.
pub fn check_name(kind: &str, name: &str) -> Result<(), NameError> {
    match kind {
        "Namespace" => dns1123_label(name),
        "Service" => dns1035_label(name),
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => path_segment(name),
        // `VERSION.GROUP`; the core group's is `v1.` (an empty group after the dot).
        "APIService" => dns1123_subdomain(name.strip_suffix('.').unwrap_or(name)),
        _ => dns1123_subdomain(name),
    }
}

/// An IANA service name (container and Service port names).
pub fn port_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(NameError::PortName)
    }
}

/// Checks a cron schedule: five fields or an `@` macro.
pub fn check_cron(s: &str) -> Result<(), crate::api::batch::ScheduleError> {
    crate::api::batch::parse_schedule(s, None).map(|_| ())
}
