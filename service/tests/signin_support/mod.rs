//! The demo IdP (with its login page) run in-process on a loopback port, an `airlock
//! serve` configured to sign console users in with it, and the steps of the authorization
//! code flow as a browser takes them, one redirect at a time.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;

use crate::common::{Server, ServerOptions};

pub const CLIENT_ID: &str = "airlock-console";

pub struct DemoIdp {
    pub issuer: String,
}

impl DemoIdp {
    pub async fn start() -> DemoIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let app = airlock_demo::idp::router(issuer.clone(), CLIENT_ID.into()).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        DemoIdp { issuer }
    }

    /// `airlock serve` trusting this IdP for bearer JWTs and console sign-in.
    pub fn server(&self) -> Server {
        self.server_with("")
    }

    /// [`DemoIdp::server`] with `extra` TOML appended (before the `[oidc]` table).
    pub fn server_with(&self, extra: &str) -> Server {
        Server::start_with(ServerOptions {
            extra_config: format!(
                "{extra}\n[oidc]\nissuer = \"{i}\"\naudience = \"{CLIENT_ID}\"\n\
                 jwks_url = \"{i}/.well-known/jwks.json\"\nauditor_groups = [\"audit\"]\n\n\
                 [oidc.login]\nsession_minutes = 30\n",
                i = self.issuer
            ),
            ..ServerOptions::default()
        })
    }
}

/// A client that shows each redirect instead of following it.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

/// `name=value` of the cookie `name` among `set_cookies`.
pub fn cookie_pair(set_cookies: &[String], name: &str) -> String {
    let c =
        set_cookies.iter().find(|c| c.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("{set_cookies:?}"));
    c.split(';').next().unwrap().to_string()
}

/// A sign-in started at the service: the IdP's authorize parameters and the login cookie.
pub struct Begun {
    pub authorize: reqwest::Url,
    pub params: HashMap<String, String>,
    pub login_cookie: String,
}

pub async fn begin(s: &Server) -> Begun {
    let resp = no_redirects().get(s.at("/auth/login")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let authorize = reqwest::Url::parse(&location(&resp)).unwrap();
    let params = authorize.query_pairs().into_owned().collect();
    Begun { authorize, params, login_cookie: cookie_pair(&set_cookies(&resp), "airlock_login") }
}

/// Submits the IdP's login form with `params` (possibly altered); returns `(code, state)`
/// from the redirect back.
pub async fn idp_login(b: &Begun, params: &HashMap<String, String>, user: &str, groups: &str) -> (String, String) {
    let mut form = params.clone();
    form.insert("username".into(), user.into());
    form.insert("groups".into(), groups.into());
    let mut url = b.authorize.clone();
    url.set_query(None);
    let resp = no_redirects().post(url).form(&form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.text().await);
    let back = reqwest::Url::parse(&location(&resp)).unwrap();
    let q: HashMap<String, String> = back.query_pairs().into_owned().collect();
    (q["code"].clone(), q["state"].clone())
}

/// The browser coming back to the service with `code` and `state`.
pub async fn callback(s: &Server, code: &str, state: &str, login_cookie: &str) -> reqwest::Response {
    no_redirects()
        .get(s.at("/auth/callback"))
        .query(&[("code", code), ("state", state)])
        .header("cookie", login_cookie)
        .send()
        .await
        .unwrap()
}

/// A full sign-in; returns the callback's answer.
pub async fn sign_in(s: &Server, user: &str, groups: &str) -> reqwest::Response {
    let b = begin(s).await;
    let (code, state) = idp_login(&b, &b.params, user, groups).await;
    callback(s, &code, &state, &b.login_cookie).await
}
