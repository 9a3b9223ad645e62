//! The peer channel: custodian to custodian over mutual TLS, for the secrets no
//! coordinator may see (a DKG's round-2 packages, a reshare's sub-shares).
//!
//! Both ends check identities that only certificates carry. The sender connects to the
//! address the coordinator gave for a holder and, before it writes a byte of the request,
//! requires the answering certificate to name exactly the custodian given for that holder
//! (`spiffe://<td>/custodian/<name>`): a misrouted address ends the connection with
//! nothing sent. The receiver accepts only custodian certificates, and only the one named
//! for the sending holder in the DKG it is part of.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use certs::{Role, SpiffeId};
use threshold::dkg::Round2Package;
use threshold::reshare::SubShare;
use threshold::Zeroizing;
use wire::dkg::{DkgPeer, PeerDkg, PeerDkgResponse};
use wire::reshare::PeerReshare;
use wire::Reason;

use super::{keyed_body, refuse, step_error, ApiError, AppState, Peer, Shared, B64};
use crate::dkg::{Outgoing, Params, Step};

/// How long one peer may take to take its package: both tries and the pause between
/// them fit in the enroller's default 5 s deadline for the round-2 step.
const PEER_DEADLINE: Duration = Duration::from_secs(2);
/// Tries per peer when no answer came (it may be restarting); a refusal is final.
const ATTEMPTS: u32 = 2;

/// The SPIFFE id of custodian `name` in this trust domain.
fn custodian_id(s: &AppState, name: &str) -> Option<SpiffeId> {
    format!("spiffe://{}/custodian/{name}", s.trust_domain)
        .parse()
        .ok()
}

/// A client configuration that presents this custodian's own certificate, read fresh
/// (so that a renewed certificate is used without a restart).
fn client_tls(s: &AppState) -> Result<Arc<rustls::ClientConfig>, ApiError> {
    let read = |p: &std::path::Path| std::fs::read(p).map(Zeroizing::new);
    let built = (|| {
        let ca = read(&s.tls.ca).map_err(|e| e.to_string())?;
        let cert = read(&s.tls.cert).map_err(|e| e.to_string())?;
        let key = read(&s.tls.key).map_err(|e| e.to_string())?;
        certs::tls::client_config(&ca, &cert, &key).map_err(|e| e.to_string())
    })();
    built.map(Arc::new).map_err(|e| {
        tracing::error!(error = %e, "cannot build the peer channel's TLS configuration");
        ApiError::ours(Reason::Internal)
    })
}

/// Sends every other holder its round-2 package, all at once. `Err` names the first
/// peer that did not take its package, with the refusal to answer.
pub(crate) async fn send_round2(
    s: &AppState,
    sid: &str,
    params: &Params,
    transcript: &[u8; 32],
    outgoing: Outgoing,
) -> Result<(), (String, ApiError)> {
    let transcript = B64.encode(transcript);
    let mut sends = Vec::with_capacity(outgoing.len());
    for (to, package) in outgoing {
        let entry = params
            .peer(to.get())
            .ok_or_else(|| (String::new(), ApiError::bad(Reason::InvalidDkg)))?;
        #[cfg(feature = "fault-injection")]
        let package = crate::fault::round2_package(params.kind, package);
        let req = PeerDkg {
            secret_id: sid.to_owned(),
            from: params.me.get(),
            to: to.get(),
            transcript: transcript.clone(),
            package: Zeroizing::new(B64.encode(&*package)),
        };
        sends.push((entry, req));
    }
    send_all(s, sid, sends).await
}

/// Sends each request to its peer, all at once, over the peer channel: the answering
/// certificate must name the custodian of the entry. `Err` names the first peer that
/// did not take its request, with the refusal to answer.
pub(crate) async fn send_all<R>(
    s: &AppState,
    sid: &str,
    sends: Vec<(&DkgPeer, R)>,
) -> Result<(), (String, ApiError)>
where
    R: wire::Request + Sync,
{
    let tls = client_tls(s).map_err(|e| (String::new(), e))?;
    let sends = sends.into_iter().map(|(entry, req)| {
        let tls = tls.clone();
        async move {
            let name = entry.name.clone();
            let refused = |reason| (name.clone(), ApiError::new(StatusCode::BAD_GATEWAY, reason));
            let (Ok(addr), Some(expected)) = (
                entry.address.parse::<std::net::SocketAddr>(),
                custodian_id(s, &entry.name),
            ) else {
                return Err(refused(Reason::InvalidDkg));
            };
            let client = mtls::Client::new(addr, &entry.server_name, tls)
                .map_err(|_| refused(Reason::InvalidDkg))?
                .expect_identity(expected)
                .with_deadline(PEER_DEADLINE);
            let mut attempt = 0;
            loop {
                attempt += 1;
                match client.call(&req).await {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        let no_answer = matches!(
                            e,
                            mtls::Error::Connect { .. }
                                | mtls::Error::Transport { .. }
                                | mtls::Error::Timeout { .. }
                        );
                        if no_answer && attempt < ATTEMPTS {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        let reason = match &e {
                            mtls::Error::WrongPeer { .. } | mtls::Error::Handshake { .. } => {
                                Reason::PeerWrongIdentity
                            }
                            mtls::Error::Refused { .. } | mtls::Error::Decode { .. } => {
                                Reason::PeerRefused
                            }
                            _ => Reason::PeerUnreachable,
                        };
                        tracing::warn!(secret_id = %sid, peer = %name, error = %e, "peer channel: a package was not taken");
                        return Err(refused(reason));
                    }
                }
            }
        }
    });
    for outcome in futures_util::future::join_all(sends).await {
        outcome?;
    }
    Ok(())
}

/// `PUT /v1/peer/dkg/{id}`: another holder's round-2 package for this one.
pub(crate) async fn take_round2(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<PeerDkg>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "peer_dkg";
    let (id, sid, req) = keyed_body(&s, &peer, op, &raw_id, &[Role::Custodian], body, Ok).await?;
    let Some(params) = s.dkgs.params(&id) else {
        return Err(refuse(&s, &peer, op, &sid, -1, step_error(Step::Unknown)).await);
    };
    let index = i64::from(params.me.get());
    let taken = check(&s, &peer, &req, &params).and_then(|(transcript, package)| {
        s.dkgs
            .receive(&id, req.from, transcript, package)
            .map_err(step_error)
    });
    match taken {
        Ok(already_taken) => {
            tracing::debug!(peer = %peer.0, secret_id = %sid, from = req.from, "peer channel: round-2 package taken");
            let status = if already_taken {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let answer = PeerDkgResponse {
                holder: params.me.get(),
                already_taken,
            };
            Ok((status, Json(answer)).into_response())
        }
        Err(e) => Err(refuse(&s, &peer, op, &sid, index, e).await),
    }
}

/// A peer package's checks: for this holder, from another holder of the DKG whose
/// custodian is the caller, with a 32-byte transcript and a package of the DKG's kind.
fn check(
    s: &AppState,
    peer: &Peer,
    req: &PeerDkg,
    params: &Params,
) -> Result<([u8; 32], Round2Package), ApiError> {
    let sender = params
        .peer(req.from)
        .filter(|_| req.to == params.me.get() && req.from != req.to)
        .ok_or_else(|| ApiError::bad(Reason::InvalidRound2Package))?;
    if custodian_id(s, &sender.name).as_ref() != Some(&peer.0) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, Reason::NotThePeer));
    }
    let mut transcript = [0u8; 32];
    match B64.decode(req.transcript.as_bytes()) {
        Ok(bytes) if bytes.len() == 32 => transcript.copy_from_slice(&bytes),
        _ => return Err(ApiError::bad(Reason::InvalidBody)),
    }
    let package = B64
        .decode(req.package.as_bytes())
        .map(Zeroizing::new)
        .ok()
        .and_then(|bytes| Round2Package::decode(params.kind, &bytes).ok())
        .ok_or_else(|| ApiError::bad(Reason::InvalidRound2Package))?;
    Ok((transcript, package))
}

/// `PUT /v1/peer/reshare/{id}`: a dealer's sub-share for this new holder.
pub(crate) async fn take_sub_share(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<PeerReshare>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "peer_reshare";
    let (id, sid, req) = keyed_body(&s, &peer, op, &raw_id, &[Role::Custodian], body, Ok).await?;
    let Some(params) = s.reshares.params(&id) else {
        return Err(refuse(&s, &peer, op, &sid, -1, step_error(Step::Unknown)).await);
    };
    let Some(me) = params.me else {
        return Err(refuse(&s, &peer, op, &sid, -1, step_error(Step::OutOfOrder)).await);
    };
    let index = i64::from(me.get());
    let taken = check_sub_share(&s, &peer, &req, &params, me)
        .and_then(|share| s.reshares.receive(&id, req.from, share).map_err(step_error));
    match taken {
        Ok(already_taken) => {
            tracing::debug!(peer = %peer.0, secret_id = %sid, from = req.from, "peer channel: sub-share taken");
            let status = if already_taken {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let answer = PeerDkgResponse {
                holder: me.get(),
                already_taken,
            };
            Ok((status, Json(answer)).into_response())
        }
        Err(e) => Err(refuse(&s, &peer, op, &sid, index, e).await),
    }
}

/// A sub-share's checks: for this new holder, from a dealer of the reshare whose
/// custodian is the caller, of the reshare's kind.
fn check_sub_share(
    s: &AppState,
    peer: &Peer,
    req: &PeerReshare,
    params: &crate::reshare::Params,
    me: threshold::HolderId,
) -> Result<SubShare, ApiError> {
    let sender = params
        .dealer_entry(req.from)
        .filter(|_| req.to == me.get())
        .ok_or_else(|| ApiError::bad(Reason::InvalidRound2Package))?;
    if custodian_id(s, &sender.name).as_ref() != Some(&peer.0) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, Reason::NotThePeer));
    }
    B64.decode(req.share.as_bytes())
        .map(Zeroizing::new)
        .ok()
        .and_then(|bytes| SubShare::decode(params.kind, &bytes).ok())
        .ok_or_else(|| ApiError::bad(Reason::InvalidRound2Package))
}
