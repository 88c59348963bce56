//! The per-request context: hands each callback to `RequestFlow`, in the order Envoy
//! calls them.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::envoy_host::{callout_response, EnvoyHost};
use crate::flow::RequestFlow;
use crate::host::Next;

pub struct AirlockHttp {
    flow: RequestFlow,
}

impl AirlockHttp {
    pub fn new(flow: RequestFlow) -> Self {
        AirlockHttp { flow }
    }
}

fn action(next: Next) -> Action {
    match next {
        Next::Continue => Action::Continue,
        Next::Pause => Action::Pause,
    }
}

impl Context for AirlockHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let (status, body) = callout_response(body_size);
        self.flow.on_callout_response(&mut EnvoyHost, token, status, body);
    }
}

impl HttpContext for AirlockHttp {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(self.flow.on_request_headers(&mut EnvoyHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.flow.on_request_body(&mut EnvoyHost, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        action(self.flow.on_request_trailers(&mut EnvoyHost))
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(self.flow.on_response_headers(&mut EnvoyHost, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.flow.on_response_body(&mut EnvoyHost, body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        action(self.flow.on_response_trailers(&mut EnvoyHost))
    }

    fn on_log(&mut self) {
        self.flow.on_log(&mut EnvoyHost);
    }
}
