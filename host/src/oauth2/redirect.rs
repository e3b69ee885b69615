//! The page the provider sends the browser back to after an authorization code login: it
//! shows `state|code` for the user to paste into the SSH prompt. `redirect.webroot` replaces
//! the built-in page with a directory holding an `index.html` (ContainerSSH's `{{ .Code }}`
//! placeholder is filled in) and whatever it links to; files are read per request.
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::config::RedirectConfig;

/// Largest file served from the webroot.
const MAX_FILE_BYTES: u64 = 4 << 20;

const BUILT_IN_PAGE: &str = include_str!("redirect_page.html");

/// Binds the redirect server's address and serves it until the process ends. Certificates
/// are read here (off the async workers).
pub async fn start(config: &RedirectConfig) -> anyhow::Result<()> {
    let tls = config.tls();
    let tls = tokio::task::spawn_blocking(move || tls.server_config())
        .await
        .context("reading the oauth2.redirect TLS settings")?
        .map_err(|e| anyhow::anyhow!("oauth2.redirect.{e:#}"))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("oauth2.redirect.listen: cannot listen on {}", config.listen))?;
    let webroot = (!config.webroot.is_empty()).then(|| Arc::new(PathBuf::from(&config.webroot)));
    tracing::info!(listen = %config.listen, https = tls.is_some(), webroot = ?webroot, "OAuth2 redirect page listening");
    tokio::spawn(async move {
        let served =
            crate::observe::serve_pages(listener, tls, "OAuth2 redirect page", move |req| {
                let webroot = webroot.clone();
                async move { page(&req, webroot.as_deref().map(|p| p.as_path())).await }
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = format!("{e:#}"), "OAuth2 redirect page stopped");
        }
    });
    Ok(())
}

async fn page(req: &Request<Incoming>, webroot: Option<&Path>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/" || path == "/index.html" {
        let template = match webroot {
            None => BUILT_IN_PAGE.to_string(),
            Some(root) => match read_file(&root.join("index.html")).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    tracing::error!(error = %e, "oauth2.redirect.webroot: cannot read index.html");
                    return plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the login page is unavailable\n",
                    );
                }
            },
        };
        let code = code_from(req.uri().query().unwrap_or_default());
        return html(StatusCode::OK, fill_in(&template, &escape_html(&code)));
    }
    let Some(root) = webroot else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(file) = inside(root, path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    match read_file(&file).await {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            set_content_type(&mut response, content_type(&file));
            response
        }
        Err(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// What the user pastes: `state|code`, as ContainerSSH's page shows it.
fn code_from(query: &str) -> String {
    let mut state = String::new();
    let mut code = String::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "state" => state = value.into_owned(),
            "code" => code = value.into_owned(),
            _ => {}
        }
    }
    format!("{state}|{code}")
}

/// Replaces every `{{ .Code }}` (any spacing) with `code`.
fn fill_in(template: &str, code: &str) -> String {
    let mut out = String::with_capacity(template.len() + code.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let inner = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        if inner.trim() == ".Code" {
            out.push_str(code);
        } else {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The file `path` names under `root`, if it stays there (no `..`, no hidden files).
fn inside(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    let mut file = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => file.push(part),
            _ => return None,
        }
    }
    Some(file)
}

async fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other("not a file, or too large"));
    }
    tokio::fs::read(path).await
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    set_content_type(&mut response, "text/html; charset=utf-8");
    // The page holds a one-time code: never cached, never framed.
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        hyper::header::X_FRAME_OPTIONS,
        hyper::header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    set_content_type(&mut response, "text/plain; charset=utf-8");
    response
}

fn set_content_type(response: &mut Response<Full<Bytes>>, value: &'static str) {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(value),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_filled_in_escaped_in_any_spacing() {
        let page = fill_in(
            "<p>{{ .Code }}</p><i>{{.Code}}</i>{{ .Other }}",
            &escape_html("a<b|c&d"),
        );
        assert_eq!(
            page,
            "<p>a&lt;b|c&amp;d</p><i>a&lt;b|c&amp;d</i>{{ .Other }}"
        );
        assert_eq!(code_from("code=xyz&state=abc&extra=1"), "abc|xyz");
        assert_eq!(code_from("state=a%7Cb&code=c%20d"), "a|b|c d");
    }

    #[test]
    fn files_outside_the_webroot_are_never_named() {
        let root = Path::new("/srv/www");
        assert_eq!(
            inside(root, "/style.css"),
            Some(PathBuf::from("/srv/www/style.css"))
        );
        assert_eq!(
            inside(root, "/img/logo.png"),
            Some(PathBuf::from("/srv/www/img/logo.png"))
        );
        assert_eq!(inside(root, "/../etc/passwd"), None);
        assert_eq!(inside(root, "/img/../../etc/passwd"), None);
        assert_eq!(inside(root, "/.git/config"), None);
    }
}
