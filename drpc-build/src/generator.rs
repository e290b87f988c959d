//! The `prost_build::ServiceGenerator` writing, for each service, its rpc
//! names and description, a typed client and a server trait with the type
//! that registers it on a `drpc_core::Router`.

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost_build::{Comments, Method, Service};
use std::fmt::Write;

/// Which parts to generate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts {
    pub client: bool,
    pub server: bool,
    /// Server trait methods get default bodies answering Unimplemented.
    pub default_stubs: bool,
}

pub(crate) struct Generator {
    pub parts: Parts,
}

// Paths the generated code names, absolute so that no message of the user's
// package (a `Result`, a `Status`, ...) can shadow them.
const CORE: &str = "::drpc_core";
const RESULT: &str = "::core::result::Result";
const STATUS: &str = "::drpc_core::Status";
const CONTEXT: &str = "::drpc_core::CallContext";
const OPTIONS: &str = "::drpc_core::CallOptions";
const SEND_FUTURE: &str = "impl ::core::future::Future<Output = ::core::result::Result";

/// Names the generated client defines itself; an rpc with one of them gets an
/// `_rpc` suffix.
const CLIENT_RESERVED: &[&str] = &["new", "channel", "into_channel"];
/// Constants the service module defines besides the rpc names.
const MODULE_RESERVED: &[&str] = &["SERVICE_NAME", "DESCRIPTOR"];

impl prost_build::ServiceGenerator for Generator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let service = ServiceNames::new(&service);
        service.write_module(buf);
        if self.parts.client {
            service.write_client(buf);
        }
        if self.parts.server {
            service.write_server(buf, self.parts.default_stubs);
        }
    }
}

/// Escapes an identifier that is a Rust keyword the way prost-build does, so
/// the names here agree with the ones it gives messages and methods.
pub(crate) fn sanitize_identifier(ident: &str) -> String {
    match ident {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if" | "impl" | "in"
        | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref" | "return" | "static" | "struct"
        | "trait" | "true" | "type" | "unsafe" | "use" | "where" | "while" | "dyn" | "abstract" | "become" | "box"
        | "do" | "final" | "macro" | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async"
        | "await" | "try" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_ascii_digit()) => format!("_{ident}"),
        _ => ident.to_string(),
    }
}

struct ServiceNames<'a> {
    service: &'a Service,
    /// `pkg.Service`, or `Service` without a package.
    full_name: String,
    /// The module with the rpc names and the descriptor.
    module: String,
    /// The server trait.
    trait_name: String,
    /// What the client and server type names start with: the trait name
    /// without the `_` that escapes `Self`.
    type_prefix: String,
    methods: Vec<MethodNames<'a>>,
}

struct MethodNames<'a> {
    method: &'a Method,
    /// `/pkg.Service/Method`.
    rpc: String,
    /// The rpc-name constant in the service module.
    constant: String,
    /// The client method.
    client_fn: String,
}

impl<'a> ServiceNames<'a> {
    fn new(service: &'a Service) -> ServiceNames<'a> {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let methods = service
            .methods
            .iter()
            .map(|method| {
                let mut constant = method.proto_name.to_shouty_snake_case();
                if MODULE_RESERVED.contains(&constant.as_str()) {
                    constant.push_str("_RPC");
                }
                let mut client_fn = method.name.clone();
                if CLIENT_RESERVED.contains(&client_fn.as_str()) {
                    client_fn.push_str("_rpc");
                }
                MethodNames {
                    method,
                    rpc: format!("/{full_name}/{}", method.proto_name),
                    constant: sanitize_identifier(&constant),
                    client_fn,
                }
            })
            .collect();
        ServiceNames {
            service,
            module: sanitize_identifier(&format!("{}_rpc", service.proto_name.to_snake_case())),
            trait_name: service.name.clone(),
            type_prefix: service.name.trim_end_matches('_').to_string(),
            full_name,
            methods,
        }
    }

    fn constant(&self, m: &MethodNames) -> String {
        format!("{}::{}", self.module, m.constant)
    }

    fn write_module(&self, buf: &mut String) {
        let module = &self.module;
        let full_name = &self.full_name;
        let package = &self.service.package;
        writeln!(buf, "/// Rpc names and the description of the `{full_name}` service.").unwrap();
        writeln!(buf, "#[allow(dead_code)]").unwrap();
        writeln!(buf, "pub mod {module} {{").unwrap();
        writeln!(buf, "    /// The fully qualified service name.").unwrap();
        writeln!(buf, "    pub const SERVICE_NAME: &str = {full_name:?};").unwrap();
        for m in &self.methods {
            writeln!(buf, "    /// The wire name of `{}`.", m.method.proto_name).unwrap();
            writeln!(buf, "    pub const {}: &str = {:?};", m.constant, m.rpc).unwrap();
        }
        writeln!(buf, "    /// The service as declared: its rpcs, their messages and streaming kinds.").unwrap();
        writeln!(buf, "    pub const DESCRIPTOR: {CORE}::call::ServiceDescriptor = {CORE}::call::ServiceDescriptor {{").unwrap();
        writeln!(buf, "        name: SERVICE_NAME,").unwrap();
        writeln!(buf, "        package: {package:?},").unwrap();
        writeln!(buf, "        methods: &[").unwrap();
        for m in &self.methods {
            let method = m.method;
            writeln!(buf, "            {CORE}::call::MethodDescriptor {{").unwrap();
            writeln!(buf, "                name: {:?},", method.proto_name).unwrap();
            writeln!(buf, "                rpc: {},", m.constant).unwrap();
            writeln!(
                buf,
                "                kind: {CORE}::call::RpcKind::new({}, {}),",
                method.client_streaming, method.server_streaming
            )
            .unwrap();
            writeln!(buf, "                input_type: {:?},", method.input_proto_type.trim_start_matches('.')).unwrap();
            writeln!(buf, "                output_type: {:?},", method.output_proto_type.trim_start_matches('.')).unwrap();
            writeln!(buf, "            }},").unwrap();
        }
        writeln!(buf, "        ],").unwrap();
        writeln!(buf, "    }};").unwrap();
        writeln!(buf, "}}").unwrap();
    }

    fn write_client(&self, buf: &mut String) {
        let client = format!("{}Client", self.type_prefix);
        let full_name = &self.full_name;
        write_doc(buf, 0, &self.service.comments, &[&format!(
            "Client of the `{full_name}` service: one method per rpc, over a [`Conn`](drpc_core::Conn) \
             (the default) or a pool's [`PoolChannel`](drpc_core::call::PoolChannel)."
        )]);
        writeln!(buf, "#[derive(Clone, Debug)]").unwrap();
        writeln!(buf, "pub struct {client}<C = {CORE}::Conn> {{").unwrap();
        writeln!(buf, "    channel: C,").unwrap();
        writeln!(buf, "}}").unwrap();
        // A caller rarely uses every rpc of a service.
        writeln!(buf, "#[allow(dead_code)]").unwrap();
        writeln!(buf, "impl<C: {CORE}::call::Channel> {client}<C> {{").unwrap();
        writeln!(buf, "    /// A client calling through `channel`.").unwrap();
        writeln!(buf, "    pub fn new(channel: C) -> Self {{").unwrap();
        writeln!(buf, "        Self {{ channel }}").unwrap();
        writeln!(buf, "    }}").unwrap();
        writeln!(buf, "    /// The channel the calls go through.").unwrap();
        writeln!(buf, "    pub fn channel(&self) -> &C {{").unwrap();
        writeln!(buf, "        &self.channel").unwrap();
        writeln!(buf, "    }}").unwrap();
        writeln!(buf, "    /// Gives the channel back.").unwrap();
        writeln!(buf, "    pub fn into_channel(self) -> C {{").unwrap();
        writeln!(buf, "        self.channel").unwrap();
        writeln!(buf, "    }}").unwrap();
        for m in &self.methods {
            self.write_client_method(buf, m);
        }
        writeln!(buf, "}}").unwrap();
    }

    fn write_client_method(&self, buf: &mut String, m: &MethodNames) {
        let method = m.method;
        let (input, output) = (&method.input_type, &method.output_type);
        let (name, rpc) = (&m.client_fn, self.constant(m));
        let (note, signature, body) = match (method.client_streaming, method.server_streaming) {
            (false, false) => (
                "Unary".to_string(),
                format!("request: &{input}, opts: &{OPTIONS}) -> {RESULT}<{output}, {STATUS}>"),
                format!("{CORE}::call::unary(&self.channel, {rpc}, request, opts)"),
            ),
            (false, true) => (
                "Server-streaming: sends `request` and returns the stream of responses".to_string(),
                format!("request: &{input}, opts: &{OPTIONS}) -> {RESULT}<{CORE}::call::RecvStream<{output}>, {STATUS}>"),
                format!("{CORE}::call::server_streaming(&self.channel, {rpc}, request, opts)"),
            ),
            (true, false) => (
                "Client-streaming: returns the request half and the receiver of the one response, \
                 sent once the request half is closed; dropping the request half before closing it \
                 cancels the call"
                    .to_string(),
                format!(
                    "opts: &{OPTIONS}) -> {RESULT}<({CORE}::call::SendStream<{input}>, \
                     {CORE}::call::ResponseReceiver<{output}>), {STATUS}>"
                ),
                format!("{CORE}::call::client_streaming(&self.channel, {rpc}, opts)"),
            ),
            (true, true) => (
                "Bidi-streaming: returns the request and response halves; dropping the request half \
                 before closing it cancels the call"
                    .to_string(),
                format!(
                    "opts: &{OPTIONS}) -> {RESULT}<({CORE}::call::SendStream<{input}>, \
                     {CORE}::call::RecvStream<{output}>), {STATUS}>"
                ),
                format!("{CORE}::call::bidi_streaming(&self.channel, {rpc}, opts)"),
            ),
        };
        let wire = format!("{note} (`{}`).", m.rpc);
        write_doc(buf, 1, &method.comments, &[&wire]);
        allow_self_convention(buf, name);
        writeln!(buf, "    pub async fn {name}(&self, {signature} {{").unwrap();
        writeln!(buf, "        {body}.await").unwrap();
        writeln!(buf, "    }}").unwrap();
    }

    /// The handler's parameters after `&self`, and what it returns.
    fn handler_signature(method: &Method) -> (String, String) {
        let (input, output) = (&method.input_type, &method.output_type);
        let requests = format!("requests: {CORE}::call::RecvStream<{input}>");
        let responses = format!("responses: {CORE}::call::ResponseSender<{output}>");
        let ctx = format!("ctx: {CONTEXT}");
        match (method.client_streaming, method.server_streaming) {
            (false, false) => (format!("request: {input}, {ctx}"), output.clone()),
            (false, true) => (format!("request: {input}, {responses}, {ctx}"), "()".into()),
            (true, false) => (format!("{requests}, {ctx}"), output.clone()),
            (true, true) => (format!("{requests}, {responses}, {ctx}"), "()".into()),
        }
    }

    fn write_server(&self, buf: &mut String, default_stubs: bool) {
        let trait_name = &self.trait_name;
        let server = format!("{}Server", self.type_prefix);
        let full_name = &self.full_name;
        write_doc(buf, 0, &self.service.comments, &[&format!(
            "The `{full_name}` service, implemented by a server: one method per rpc, served by \
             registering [`{server}`] on a [`Router`](drpc_core::Router). A returned `Err` ends the \
             call with that status."
        )]);
        writeln!(buf, "pub trait {trait_name}: ::core::marker::Send + ::core::marker::Sync + 'static {{").unwrap();
        for m in &self.methods {
            let method = m.method;
            let (params, output) = Self::handler_signature(method);
            let note = match (method.client_streaming, method.server_streaming) {
                (false, false) => "Unary: the request in, the response out",
                (false, true) => "Server-streaming: sends its responses on `responses`, then returns",
                (true, false) => "Client-streaming: reads `requests` until `None`, then returns the response",
                (true, true) => "Bidi-streaming: reads `requests`, sends on `responses`",
            };
            let wire = format!("{note} (`{}`).", m.rpc);
            write_doc(buf, 1, &method.comments, &[&wire]);
            allow_self_convention(buf, &method.name);
            let returns = format!("{SEND_FUTURE}<{output}, {STATUS}>> + ::core::marker::Send");
            if default_stubs {
                let args = param_names(&params);
                writeln!(buf, "    fn {}(&self, {params}) -> {returns} {{", method.name).unwrap();
                writeln!(buf, "        let _ = ({args});").unwrap();
                writeln!(
                    buf,
                    "        ::core::future::ready({RESULT}::Err({STATUS}::unimplemented({:?})))",
                    format!("rpc {} is not implemented by this server", m.rpc)
                )
                .unwrap();
                writeln!(buf, "    }}").unwrap();
            } else {
                writeln!(buf, "    fn {}(&self, {params}) -> {returns};", method.name).unwrap();
            }
        }
        writeln!(buf, "}}").unwrap();

        writeln!(
            buf,
            "/// Serves a [`{trait_name}`]: `Router::new().service({server}::new(service))` registers every rpc of \
             `{full_name}`."
        )
        .unwrap();
        writeln!(buf, "#[derive(Debug)]").unwrap();
        writeln!(buf, "pub struct {server}<S> {{").unwrap();
        writeln!(buf, "    service: ::std::sync::Arc<S>,").unwrap();
        writeln!(buf, "}}").unwrap();
        writeln!(buf, "impl<S: {trait_name}> {server}<S> {{").unwrap();
        writeln!(buf, "    /// Serves `service`.").unwrap();
        writeln!(buf, "    pub fn new(service: S) -> Self {{").unwrap();
        writeln!(buf, "        Self::from_arc(::std::sync::Arc::new(service))").unwrap();
        writeln!(buf, "    }}").unwrap();
        writeln!(buf, "    /// Serves a service that is shared with other code.").unwrap();
        writeln!(buf, "    pub fn from_arc(service: ::std::sync::Arc<S>) -> Self {{").unwrap();
        writeln!(buf, "        Self {{ service }}").unwrap();
        writeln!(buf, "    }}").unwrap();
        writeln!(buf, "}}").unwrap();
        writeln!(buf, "impl<S> ::core::clone::Clone for {server}<S> {{").unwrap();
        writeln!(buf, "    fn clone(&self) -> Self {{").unwrap();
        writeln!(buf, "        Self {{ service: ::std::sync::Arc::clone(&self.service) }}").unwrap();
        writeln!(buf, "    }}").unwrap();
        writeln!(buf, "}}").unwrap();
        writeln!(buf, "impl<S: {trait_name}> {CORE}::call::Service for {server}<S> {{").unwrap();
        writeln!(
            buf,
            "    const DESCRIPTOR: &'static {CORE}::call::ServiceDescriptor = &{}::DESCRIPTOR;",
            self.module
        )
        .unwrap();
        if self.methods.is_empty() {
            writeln!(buf, "    fn register(self, router: {CORE}::Router) -> {CORE}::Router {{").unwrap();
            writeln!(buf, "        router").unwrap();
            writeln!(buf, "    }}").unwrap();
        } else {
            writeln!(buf, "    fn register(self, router: {CORE}::Router) -> {CORE}::Router {{").unwrap();
            writeln!(buf, "        let service = self.service;").unwrap();
            writeln!(buf, "        router").unwrap();
            for m in &self.methods {
                self.write_registration(buf, m);
            }
            writeln!(buf, "    }}").unwrap();
        }
        writeln!(buf, "}}").unwrap();
    }

    fn write_registration(&self, buf: &mut String, m: &MethodNames) {
        let method = m.method;
        let rpc = self.constant(m);
        let name = &method.name;
        let (params, _) = Self::handler_signature(method);
        let register = match (method.client_streaming, method.server_streaming) {
            (false, false) => "unary",
            (false, true) => "server_streaming_typed",
            (true, false) => "client_streaming_typed",
            (true, true) => "bidi_typed",
        };
        let args = param_names(&params);
        writeln!(buf, "            .{register}({rpc}, {{").unwrap();
        writeln!(buf, "                let service = ::std::sync::Arc::clone(&service);").unwrap();
        writeln!(buf, "                move |{params}| {{").unwrap();
        writeln!(buf, "                    let service = ::std::sync::Arc::clone(&service);").unwrap();
        writeln!(buf, "                    async move {{ service.{name}({args}).await }}").unwrap();
        writeln!(buf, "                }}").unwrap();
        writeln!(buf, "            }})").unwrap();
    }
}

/// Rpc methods take `&self` whatever their name; clippy expects no `self`
/// from a `new` and an owned `self` from `into_*` and `from_*`.
fn allow_self_convention(buf: &mut String, method: &str) {
    if method == "new" || method.starts_with("into_") || method.starts_with("from_") {
        writeln!(buf, "    #[allow(clippy::wrong_self_convention)]").unwrap();
    }
}

/// `a, b` from `a: A, b: B` (the generated types hold no `, `).
fn param_names(params: &str) -> String {
    params.split(", ").filter_map(|p| p.split(':').next()).collect::<Vec<_>>().join(", ")
}

/// Doc comment lines: the proto comments, then `extra` as its own paragraph.
fn write_doc(buf: &mut String, indent: u8, comments: &Comments, extra: &[&str]) {
    let proto = Comments { leading_detached: Vec::new(), leading: comments.leading.clone(), trailing: comments.trailing.clone() };
    proto.append_with_indent(indent, buf);
    let pad = "    ".repeat(indent as usize);
    if !proto.leading.is_empty() || !proto.trailing.is_empty() {
        writeln!(buf, "{pad}///").unwrap();
    }
    for line in extra {
        writeln!(buf, "{pad}/// {line}").unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_escaped_like_prost_does() {
        assert_eq!(sanitize_identifier("type"), "r#type");
        assert_eq!(sanitize_identifier("self"), "self_");
        assert_eq!(sanitize_identifier("1st"), "_1st");
        assert_eq!(sanitize_identifier("kv"), "kv");
    }
}
