//! The wire: every request and response of the custodian and the enroller, and every
//! refusal, as plain serde types. No I/O: the services serve these types and the clients
//! send them, so a renamed field or route breaks the build instead of a running cluster.
//!
//! Each request type implements [`Request`], which names its method, its route and its
//! answer type once; the servers register [`Request::ROUTE`] and the client builds the
//! concrete path with [`Request::path`]. Every refusal is a [`Refusal`] body whose
//! [`Reason`] says what went wrong and whether retrying can help.
//!
//! | module | service |
//! |---|---|
//! | [`custodian`] | the custodian: shards (deposit, release, delete, list), health |
//! | [`enroller`] | the enroller: accounts (register, login, admin), enrollment, health |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod custodian;
pub mod dkg;
pub mod enroller;
mod reason;
pub mod reshare;

pub use reason::{Class, CustodianFailure, Reason, Refusal};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An HTTP method of the project's APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: reads; no body.
    Get,
    /// `PUT`: an idempotent write with a JSON body.
    Put,
    /// `POST`: an action with a JSON body.
    Post,
    /// `DELETE`: no body.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// One request of a service's API: its method, its route and the type of its answer,
/// each named once.
pub trait Request {
    /// The HTTP method.
    const METHOD: Method;
    /// The route as the server registers it, with `{name}` for a path parameter
    /// (e.g. `/v1/shards/{id}`).
    const ROUTE: &'static str;
    /// The successful answer.
    type Response: Answer;
    /// The concrete path of this request: the route with its parameters and query.
    fn path(&self) -> String {
        Self::ROUTE.to_owned()
    }
    /// The JSON body, if the request has one.
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        Ok(None)
    }
}

/// A successful answer's body, decoded from its bytes.
pub trait Answer: Sized {
    /// Decodes the body of a successful answer.
    fn decode(body: &[u8]) -> Result<Self, DecodeError>;
}

/// An answer that did not decode. Not retryable: the peer speaks another version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a JSON answer.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError(e.to_string()))
}

/// The JSON body of a request that is its own body.
pub fn json_body<T: Serialize + ?Sized>(value: &T) -> Result<Option<Vec<u8>>, serde_json::Error> {
    serde_json::to_vec(value).map(Some)
}

/// A text answer (PEM, Prometheus text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Answer for Text {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(body.to_vec())
            .map(Text)
            .map_err(|_| DecodeError("the answer is not UTF-8 text".into()))
    }
}

impl<T: DeserializeOwned> Answer for Vec<T> {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode_json(body)
    }
}

/// Implements [`Request`]: `request!(Type, Method, "/route", Answer)` for a request without
/// a body at its route, `json` after it for one whose JSON body is itself, or
/// `path |r| expr` for one with path parameters.
macro_rules! request {
    ($t:ty, $method:ident, $route:expr, $answer:ty) => {
        impl $crate::Request for $t {
            const METHOD: $crate::Method = $crate::Method::$method;
            const ROUTE: &'static str = $route;
            type Response = $answer;
        }
    };
    ($t:ty, $method:ident, $route:expr, $answer:ty, json) => {
        impl $crate::Request for $t {
            const METHOD: $crate::Method = $crate::Method::$method;
            const ROUTE: &'static str = $route;
            type Response = $answer;
            fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
                $crate::json_body(self)
            }
        }
    };
    ($t:ty, $method:ident, $route:expr, $answer:ty, path |$r:ident| $path:expr) => {
        impl $crate::Request for $t {
            const METHOD: $crate::Method = $crate::Method::$method;
            const ROUTE: &'static str = $route;
            type Response = $answer;
            fn path(&self) -> String {
                let $r = self;
                $path
            }
        }
    };
}
pub(crate) use request;

/// Implements [`Answer`] for JSON answer types.
macro_rules! json_answers {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::Answer for $t {
            fn decode(body: &[u8]) -> Result<Self, $crate::DecodeError> {
                $crate::decode_json(body)
            }
        })*
    };
}
pub(crate) use json_answers;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert_eq!(Method::Get.as_str(), "GET");
        assert_eq!(Method::Put.as_str(), "PUT");
        assert_eq!(Method::Post.as_str(), "POST");
        assert_eq!(Method::Delete.as_str(), "DELETE");
    }

    #[test]
    fn text_answers_must_be_utf8() {
        assert_eq!(Text::decode(b"pem").unwrap(), Text("pem".into()));
        assert!(Text::decode(&[0xff, 0xfe]).is_err());
    }
}
