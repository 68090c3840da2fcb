//! A stand-in for a Microsoft Teams Workflows webhook (Teams cannot run here): checks each
//! card's structure against the Adaptive Card schema's required parts and Teams' 28 KB limit,
//! and answers from a script (429 with Retry-After, 500, ...; then 202), as Teams does.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use super::tls::Issued;

/// A local stand-in for a Teams Workflows webhook: checks each card's structure against the
/// Adaptive Card schema's required parts and answers from a script (then 202).
/// Each request: when, the card, what is wrong with it.
pub type Seen = Arc<Mutex<Vec<(Instant, Value, Vec<String>)>>>;

pub struct TeamsReceiver {
    pub url: String,
    pub seen: Seen,
}

fn card_problems(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            p.push(what.to_owned());
        }
    };
    need(v["type"] == "message", "type must be message");
    let a = &v["attachments"][0];
    need(
        a["contentType"] == "application/vnd.microsoft.card.adaptive",
        "contentType",
    );
    let c = &a["content"];
    need(c["type"] == "AdaptiveCard", "content.type");
    need(
        c["version"].as_str().is_some_and(|s| s.starts_with("1.")),
        "version 1.x",
    );
    need(
        c["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json",
        "$schema",
    );
    let body = c["body"].as_array();
    need(body.is_some_and(|b| !b.is_empty()), "body");
    for el in body.into_iter().flatten() {
        match el["type"].as_str() {
            Some("TextBlock") => need(el["text"].is_string(), "TextBlock.text"),
            Some("FactSet") => need(
                el["facts"].as_array().is_some_and(|f| {
                    f.iter()
                        .all(|x| x["title"].is_string() && x["value"].is_string())
                }),
                "FactSet.facts",
            ),
            other => need(false, &format!("unknown element {other:?}")),
        }
    }
    for act in c["actions"].as_array().into_iter().flatten() {
        need(
            act["type"] == "Action.OpenUrl" && act["url"].is_string(),
            "Action.OpenUrl.url",
        );
    }
    need(v.to_string().len() <= 28 * 1024, "under 28 KB");
    p
}

pub async fn teams_receiver(script: Vec<u16>) -> TeamsReceiver {
    serve(script, None).await
}

/// The same stand-in on https, with `cert` (for localhost), as Teams' webhooks are.
pub async fn teams_receiver_tls(script: Vec<u16>, cert: &Issued) -> TeamsReceiver {
    serve(script, Some(cert.server_config())).await
}

async fn serve(script: Vec<u16>, tls: Option<rustls::ServerConfig>) -> TeamsReceiver {
    let seen: Seen = Arc::default();
    let script = Arc::new(Mutex::new(script));
    let (s2, sc2) = (seen.clone(), script.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let (seen, script) = (s2.clone(), sc2.clone());
        App::new().route(
            "/webhook",
            web::post().to(move |_req: HttpRequest, body: web::Json<Value>| {
                let (seen, script) = (seen.clone(), script.clone());
                async move {
                    let problems = card_problems(&body);
                    seen.lock()
                        .unwrap()
                        .push((Instant::now(), body.into_inner(), problems));
                    let next = {
                        let mut s = script.lock().unwrap();
                        if s.is_empty() {
                            202
                        } else {
                            s.remove(0)
                        }
                    };
                    let mut r =
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(next).unwrap());
                    if next == 429 {
                        r.insert_header(("Retry-After", "1"));
                    }
                    r.finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals();
    let (server, url) = match tls {
        None => (
            server.listen(listener).unwrap(),
            format!("http://127.0.0.1:{port}/webhook"),
        ),
        Some(tls) => (
            server.listen_rustls_0_23(listener, tls).unwrap(),
            format!("https://localhost:{port}/webhook"),
        ),
    };
    actix_web::rt::spawn(server.run());
    TeamsReceiver { url, seen }
}
