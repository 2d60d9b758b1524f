mod admin;
mod delta;
mod grpcio;
mod sotw;
mod support;
