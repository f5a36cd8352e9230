//! User tokens signed by the platform with asymmetric keys: a gateway configured with a
//! JWKS URL (served here on loopback) accepts ES256 tokens of its keys, over REST and
//! gRPC, enforces issuer, audience and maximum lifetime, refuses HS256 when it has no
//! secret, and picks up a rotated key the first time a token names it.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portico_e2e::{ServiceKind, TestApp};
use reqwest::StatusCode;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// An ES256 signing key and its JWK.
struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn generate(kid: &str) -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("key parse failed"))?;
        Ok(Self {
            kid: kid.to_owned(),
            pair,
        })
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    fn token(&self, payload: &Value) -> anyhow::Result<String> {
        let header = URL_SAFE_NO_PAD
            .encode(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}).to_string());
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let input = format!("{header}.{body}");
        let sig = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// Serves `/jwks` with whatever document the test puts in `doc`.
async fn jwks_server(doc: Arc<Mutex<Value>>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route(
        "/jwks",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.lock().map(|d| d.clone()).unwrap_or_default()) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/jwks"))
}

fn claims(lifetime: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": "user-jwks", "iat": now, "exp": now + lifetime,
           "iss": "https://platform.test", "aud": ["portico", "other"]})
}

async fn list_webhooks(app: &TestApp, token: &str) -> anyhow::Result<StatusCode> {
    Ok(app
        .http
        .get(app.api("/webhooks"))
        .bearer_auth(token)
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn jwks_tokens_with_issuer_audience_and_lifetime_rules() -> anyhow::Result<()> {
    let first = SigningKey::generate("k1")?;
    let doc = Arc::new(Mutex::new(json!({"keys": [first.jwk()]})));
    let url = jwks_server(doc.clone()).await?;
    let mut app = TestApp::prepare().await?;
    app.start_with(
        ServiceKind::Gateway,
        &[
            ("PORTICO_JWT_SECRET", ""),
            ("PORTICO_JWKS_URL", url.as_str()),
            ("PORTICO_JWT_ISSUER", "https://platform.test"),
            ("PORTICO_JWT_AUDIENCE", "portico"),
            ("PORTICO_JWT_MAX_LIFETIME_SECS", "3600"),
        ],
    )
    .await?;

    let good = first.token(&claims(600))?;
    assert_eq!(list_webhooks(&app, &good).await?, StatusCode::OK);

    // The same key, other rules broken.
    let mut wrong_iss = claims(600);
    wrong_iss["iss"] = "https://elsewhere.test".into();
    let mut wrong_aud = claims(600);
    wrong_aud["aud"] = "someone-else".into();
    for (what, token) in [
        ("wrong issuer", first.token(&wrong_iss)?),
        ("wrong audience", first.token(&wrong_aud)?),
        ("lives too long", first.token(&claims(7200))?),
        ("HS256 without a secret", app.user_token("user-jwks")),
    ] {
        assert_eq!(
            list_webhooks(&app, &token).await?,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }

    // gRPC takes the same tokens.
    let mut grpc =
        portico_proto::v1::webhook_service_client::WebhookServiceClient::connect(app.grpc_url())
            .await?;
    let mut request = tonic::Request::new(Default::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {good}").parse()?);
    grpc.list_webhooks(request).await?;

    // The platform rotates to a new key: the first token naming it triggers a fetch.
    let second = SigningKey::generate("k2")?;
    if let Ok(mut d) = doc.lock() {
        *d = json!({"keys": [second.jwk()]});
    }
    assert_eq!(
        list_webhooks(&app, &second.token(&claims(600))?).await?,
        StatusCode::OK
    );
    // The old key is gone with the document that held it.
    assert_eq!(
        list_webhooks(&app, &first.token(&claims(600))?).await?,
        StatusCode::UNAUTHORIZED
    );
    app.cleanup().await;
    Ok(())
}
