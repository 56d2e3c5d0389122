//! Who may connect: SCRAM-SHA-256 against one user and password, or nobody asked.

use std::fmt;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use lakehouse_core::{Error, ErrorKind, Result};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password, random_nonce};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

/// SCRAM iterations, Postgres's default.
const ITERATIONS: usize = 4096;

/// How clients authenticate.
#[derive(Clone)]
pub enum Auth {
    /// SCRAM-SHA-256 with this user name and password (the password never crosses
    /// the wire).
    Password {
        /// The one user name accepted.
        user: String,
        /// Its password.
        password: String,
    },
    /// No authentication: any user name is accepted. Only on a loopback address.
    None,
}

impl Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .finish_non_exhaustive(),
            Auth::None => f.write_str("None"),
        }
    }
}

impl Auth {
    /// Password authentication for `user`; fails with [`ErrorKind::InvalidConfig`] for
    /// an empty user name or password.
    pub fn password(user: impl Into<String>, password: impl Into<String>) -> Result<Auth> {
        let (user, password) = (user.into(), password.into());
        if user.is_empty() || password.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "password authentication needs a user name and a non-empty password",
            ));
        }
        Ok(Auth::Password { user, password })
    }
}

/// The salted password of the one user, and a decoy for every other name, so that an
/// unknown user goes through the same exchange and fails the same way (`28P01`).
struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    decoy_salt: Vec<u8>,
    decoy: Vec<u8>,
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for Credentials {
    // The trait names `LoginInfo` without its lifetime; `'_` here would not match it.
    #[allow(elided_lifetimes_in_paths)]
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Ok(if login.user() == Some(self.user.as_str()) {
            Password::new(Some(self.salt.clone()), self.salted.clone())
        } else {
            Password::new(Some(self.decoy_salt.clone()), self.decoy.clone())
        })
    }
}

/// A session that needs no password (still registered for cancel requests).
#[derive(Debug)]
pub(crate) struct Open {
    manager: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.manager.clone())
    }
}

/// The startup handler of a server: SCRAM or none.
pub(crate) enum Startup {
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
    Open(Open),
}

impl Debug for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Startup::Scram(_) => "Startup::Scram",
            Startup::Open(_) => "Startup::Open",
        })
    }
}

impl Startup {
    pub(crate) fn new(auth: &Auth, manager: Arc<ConnectionManager>) -> Self {
        match auth {
            Auth::None => Startup::Open(Open { manager }),
            Auth::Password { user, password } => {
                let salt = random_nonce().into_bytes();
                let decoy_salt = random_nonce().into_bytes();
                let credentials = Credentials {
                    user: user.clone(),
                    salted: gen_salted_password(password, &salt, ITERATIONS),
                    salt,
                    decoy: gen_salted_password(&random_nonce(), &decoy_salt, ITERATIONS),
                    decoy_salt,
                };
                let mut scram = ScramAuth::new(Arc::new(credentials));
                scram.set_iterations(ITERATIONS);
                let handler = SASLAuthStartupHandler::new(Arc::new(
                    DefaultServerParameterProvider::default(),
                ))
                .with_scram(scram)
                .with_connection_manager(manager);
                Startup::Scram(handler)
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Scram(h) => h.on_startup(client, message).await,
            Startup::Open(h) => h.on_startup(client, message).await,
        }
    }
}
