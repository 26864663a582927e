//! Every state-changing route of the router (POST, PUT, DELETE, PATCH, read from the route
//! modules' source, so a route added later is covered without touching this test) is refused
//! signed out and to a viewer (pages; the admin group to an editor too), without a token, with a
//! viewer's token and with the worker token (user API), and with personal tokens (worker API);
//! nothing changes in the database meanwhile.

use aligndet_studio::accounts::*;
use aligndet_studio::*;

/// One `.route("PATH", …)` of the router sources with its state-changing methods.
#[derive(Debug)]
struct RouteDecl {
    /// The routes module of its handler (`api`, `admin`, `runs`, …).
    module: String,
    path: String,
    methods: Vec<&'static str>,
    text: String,
}

/// Every route declared under server/src/routes, read from the source (so a route added later
/// is covered without touching this test).
fn declared_routes() -> Vec<RouteDecl> {
    let mut files = vec![];
    let mut stack = vec![workspace_root().join("server/src/routes")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut routes = vec![];
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            let after = &rest[i + ".route(".len()..];
            // The call's text up to its closing parenthesis.
            let mut depth = 1;
            let end = after
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(after.len(), |(j, _)| j);
            let text = after[..end].to_string();
            rest = &after[end..];
            let Some(path) = text
                .trim_start()
                .strip_prefix('"')
                .and_then(|t| t.split('"').next())
            else {
                continue;
            };
            let methods: Vec<&'static str> = ["post", "put", "delete", "patch"]
                .into_iter()
                .filter(|m| {
                    text.match_indices(&format!("{m}(")).any(|(k, _)| {
                        k == 0
                            || !text.as_bytes()[k - 1].is_ascii_alphanumeric()
                                && text.as_bytes()[k - 1] != b'_'
                    })
                })
                .collect();
            routes.push(RouteDecl {
                module: handler_module(&text),
                path: path.to_string(),
                methods,
                text,
            });
        }
    }
    routes
}

/// The module of the first handler in a `.route(…)` call's text: the `x` of the first
/// `(x::` with `x` in lower case (`post(api::claim)`, `axum::routing::put(uploads::upload)`).
fn handler_module(text: &str) -> String {
    text.match_indices('(')
        .filter_map(|(i, _)| text[i + 1..].split_once("::").map(|(m, _)| m))
        .find(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .unwrap_or_default()
        .to_string()
}

fn concrete(path: &str) -> String {
    path.replace("{sha256}", &"0".repeat(64))
        .replace("{name}", "x.bin")
        .replace("{id}", "1")
        .replace("{image_id}", "1")
}

#[test]
fn every_state_changing_route_refuses_the_signed_out_and_viewers() {
    let db = TestDb::create();
    let data = TempDir::new("acc-routes");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let vera = viewer(&server);
    let viewer_token = create_api_token(&server.url, &vera, "probe").unwrap();
    add_user(
        &server.url,
        &server.login,
        "eddie",
        "editor",
        VIEWER_PASSWORD,
    )
    .unwrap();
    let eddie = login(&server.url, "eddie", VIEWER_PASSWORD).unwrap();
    let counts = || {
        db.query("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM datasets), (SELECT count(*) FROM experiments), (SELECT count(*) FROM workers)")
    };
    let before = counts();
    let (csrf_cookie, csrf) = csrf_from_login_page(&server.url).unwrap();
    let http = no_redirect_client();
    let mut report = vec![];
    let (mut pages, mut user_api, mut worker_api) = (0, 0, 0);
    for route in declared_routes() {
        for method in &route.methods {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let path = concrete(&route.path);
            let api_module = ["api", "api_user", "content", "api_slurm", "uploads"]
                .contains(&route.module.as_str());
            if !api_module {
                if ["/login", "/logout"].contains(&route.path.as_str()) {
                    report.push(format!("{method} {} public", route.path));
                    continue;
                }
                let page = |cookies: &str| {
                    let r = http
                        .request(m.clone(), format!("{}{path}?csrf_token={csrf}", server.url))
                        .header("cookie", cookies)
                        .header("origin", &server.url)
                        .form(&[("csrf_token", csrf.as_str())])
                        .send()
                        .unwrap();
                    (r.status().as_u16(), r.text().unwrap_or_default())
                };
                let (status, body) = page(&csrf_cookie);
                assert_eq!(status, 401, "{method} {path} signed out: {body}");
                assert!(body.contains("not signed in"), "{method} {path}: {body}");
                let own_account = route.path.starts_with("/account");
                if !own_account {
                    let cookies = format!("aligndet_csrf={csrf}; {}", vera.session);
                    let (status, body) = page(&cookies);
                    assert_eq!(status, 403, "{method} {path} as a viewer: {body}");
                    assert!(
                        body.contains("role; you are signed in as vera"),
                        "{method} {path}: {body}"
                    );
                }
                // The admin group (users, workers) refuses editors too.
                let admin_only = route.module == "admin" || route.text.contains("pages::drain");
                if admin_only {
                    let cookies = format!("aligndet_csrf={csrf}; {}", eddie.session);
                    let (status, body) = page(&cookies);
                    assert_eq!(status, 403, "{method} {path} as an editor: {body}");
                    assert!(
                        body.contains("needs the admin role"),
                        "{method} {path}: {body}"
                    );
                }
                pages += 1;
                let who = if own_account {
                    ", viewer allowed (own account)"
                } else if admin_only {
                    ", viewer 403, editor 403"
                } else {
                    ", viewer 403"
                };
                report.push(format!("{method} {} page: signed out 401{who}", route.path));
            } else if route.module == "api_user" {
                let path = path.trim_start_matches('/');
                for (token, expected) in [
                    (None, 401),
                    (Some(viewer_token.as_str()), 403),
                    (Some(server.token.as_str()), 403),
                ] {
                    let (status, body) = api_call(&server, m.clone(), path, token);
                    assert_eq!(
                        status, expected,
                        "{method} /api/v1/{path} with {token:?}: {body}"
                    );
                }
                user_api += 1;
                report.push(format!(
                    "{method} /api/v1{} user API: no token 401, viewer 403, worker token 403",
                    route.path
                ));
            } else {
                let path = path.trim_start_matches('/');
                for (token, expected) in [
                    (None, 401),
                    (Some(viewer_token.as_str()), 403),
                    (Some(server.user_token.as_str()), 403),
                ] {
                    let (status, body) = api_call(&server, m.clone(), path, token);
                    assert_eq!(
                        status, expected,
                        "{method} /api/v1/{path} with {token:?}: {body}"
                    );
                }
                worker_api += 1;
                report.push(format!(
                    "{method} /api/v1{} worker API: no token 401, personal tokens 403",
                    route.path
                ));
            }
        }
    }
    assert_eq!(counts(), before, "a refused call changed something");
    println!("{}", report.join("\n"));
    println!(
        "state-changing routes refused: {pages} pages, {user_api} user API, {worker_api} worker API"
    );
    assert!(
        pages >= 15 && user_api >= 3 && worker_api >= 10,
        "the route scan found too few: {report:?}"
    );
}
