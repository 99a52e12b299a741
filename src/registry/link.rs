//! `Link` header pagination (RFC 8288, as the distribution-spec uses it for
//! `tags/list` and `_catalog`).

/// The target of the `rel="next"` link, if any.
///
/// link-value ::= "<" URI-Reference ">" *( ";" link-param )
pub fn next_link(header: &str) -> Option<String> {
    for value in header.split(',') {
        let value = value.trim();
        let Some(rest) = value.strip_prefix('<') else {
            continue;
        };
        let Some((uri, params)) = rest.split_once('>') else {
            continue;
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(uri.to_string());
        }
    }
    None
}

/// Resolves a link target against the registry's base URL (`http://host:port`).
pub fn absolute(base: &str, link: &str) -> String {
    if link.starts_with("http://") || link.starts_with("https://") {
        link.to_string()
    } else if link.starts_with('/') {
        format!("{base}{link}")
    } else {
        format!("{base}/{link}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let table = [
            (
                r#"</v2/_catalog?last=b&n=2>; rel="next""#,
                Some("/v2/_catalog?last=b&n=2"),
            ),
            (
                r#"<https://r.io/v2/a/tags/list?n=1&last=x>; rel=next"#,
                Some("https://r.io/v2/a/tags/list?n=1&last=x"),
            ),
            (r#"</prev>; rel="prev", </next>; rel="next""#, Some("/next")),
            (r#"</x>; rel="prev""#, None),
            ("garbage", None),
            ("", None),
        ];
        for (h, want) in table {
            assert_eq!(next_link(h).as_deref(), want, "{h}");
        }
    }

    #[test]
    fn absolute_links() {
        assert_eq!(absolute("http://h:5000", "/v2/x"), "http://h:5000/v2/x");
        assert_eq!(
            absolute("http://h:5000", "https://o/v2/x"),
            "https://o/v2/x"
        );
    }
}
