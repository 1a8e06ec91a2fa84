//! Request paths: which kind, namespace, name and subresource a URL addresses, and the storage keys of objects.

use super::*;

/// What a request addresses.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: &'static KindInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/{g}/{v}/...` paths.
pub fn parse_path(path: &str) -> Result<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let kind_of =
        |plural: &str| registry::by_resource(group, version, plural).ok_or_else(not_found);
    let t = |kind, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        kind,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        sub: sub.map(String::from),
    };
    Ok(match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && tail.is_empty()
                && matches!(*plural, "status" | "finalize")) =>
        {
            let kind = kind_of(plural)?;
            if !kind.namespaced {
                return Err(not_found());
            }
            match tail {
                [] => t(kind, Some(ns), None, None),
                [name] => t(kind, Some(ns), Some(name), None),
                [name, sub] => t(kind, Some(ns), Some(name), Some(sub)),
                _ => return Err(not_found()),
            }
        }
        [plural] => t(kind_of(plural)?, None, None, None),
        [plural, name] => {
            let kind = kind_of(plural)?;
            if kind.namespaced {
                return Err(not_found());
            }
            t(kind, None, Some(name), None)
        }
        [plural, name, sub] => {
            let kind = kind_of(plural)?;
            if kind.namespaced {
                return Err(not_found());
            }
            t(kind, None, Some(name), Some(sub))
        }
        _ => return Err(not_found()),
    })
}

/// The storage key of an object, or the prefix of a collection (name None).
pub fn key(kind: &KindInfo, ns: Option<&str>, name: Option<&str>) -> String {
    let mut k = crate::store::layout::prefix(kind.group, kind.plural);
    if kind.namespaced {
        if let Some(ns) = ns {
            k.push_str(ns);
            k.push('/');
        }
    }
    if let Some(n) = name {
        k.push_str(n);
    }
    k
}

/// The namespace and name a storage key encodes.
pub fn key_identity<'a>(kind: &KindInfo, key: &'a str) -> (&'a str, &'a str) {
    let mut parts = key.rsplit('/');
    let name = parts.next().unwrap_or("");
    let ns = if kind.namespaced {
        parts.next().unwrap_or("")
    } else {
        ""
    };
    (ns, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_targets() {
        let t = parse_path("/apis/apps/v1/namespaces/ns1/deployments/web/scale").unwrap();
        assert_eq!(
            (
                t.kind.kind,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("Deployment", Some("ns1"), Some("web"), Some("scale"))
        );
        let t = parse_path("/api/v1/namespaces/ns1").unwrap();
        assert_eq!((t.kind.kind, t.name.as_deref()), ("Namespace", Some("ns1")));
        let t = parse_path("/api/v1/namespaces/ns1/status").unwrap();
        assert_eq!(
            (t.kind.kind, t.sub.as_deref()),
            ("Namespace", Some("status"))
        );
        let t = parse_path("/api/v1/pods").unwrap();
        assert_eq!((t.kind.kind, t.namespace), ("Pod", None));
        let t = parse_path("/api/v1/namespaces/x/pods").unwrap();
        assert_eq!(t.namespace.as_deref(), Some("x"));
        assert!(parse_path("/apis/apps/v1/widgets").is_err());
        assert!(
            parse_path("/api/v1/pods/x").is_err(),
            "namespaced kinds need a namespace for items"
        );
    }
}
