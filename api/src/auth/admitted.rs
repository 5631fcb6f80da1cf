//! The roles a route admits, declared once, in the handler's signature.
//!
//! A handler takes `caller: Admitted<Staff>` (or another [`Roles`] set)
//! instead of a [`Caller`]: extracting it verifies the token (401) and
//! refuses any other role (403) before the handler runs, and the same type
//! documents the roles in the contract (the bearer requirement, `x-roles`
//! and a line of the description; see `crate::openapi::io`). What a route
//! enforces and what it documents cannot drift apart.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::verify::Authenticator;
use super::{Caller, Role};
use crate::error::ApiError;

/// A set of roles, as a type.
pub trait Roles: Send + Sync + 'static {
    /// The roles admitted.
    const ROLES: &'static [Role];
}

/// Every role: customers, operators and admins.
#[derive(Debug)]
pub struct Anyone;

/// Operators and admins.
#[derive(Debug)]
pub struct Staff;

/// Admins only.
#[derive(Debug)]
pub struct Admins;

/// Customers only.
#[derive(Debug)]
pub struct Customers;

impl Roles for Anyone {
    const ROLES: &'static [Role] = &[Role::Customer, Role::Operator, Role::Admin];
}

impl Roles for Staff {
    const ROLES: &'static [Role] = &[Role::Operator, Role::Admin];
}

impl Roles for Admins {
    const ROLES: &'static [Role] = &[Role::Admin];
}

impl Roles for Customers {
    const ROLES: &'static [Role] = &[Role::Customer];
}

/// The authenticated caller, admitted by one of `R`'s roles: a
/// [`Caller`] (through `Deref`) that the route's roles let in.
#[derive(Debug)]
pub struct Admitted<R: Roles> {
    caller: Caller,
    roles: PhantomData<R>,
}

impl<R: Roles> Deref for Admitted<R> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<S, R> FromRequestParts<S> for Admitted<R>
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
    R: Roles,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(R::ROLES)?;
        Ok(Admitted {
            caller,
            roles: PhantomData,
        })
    }
}
