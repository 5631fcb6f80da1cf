//! What each extractor and answer type contributes to an operation of the
//! contract: parameters, bodies, answers, and the errors it can cause.

use aide::generate::GenContext;
use aide::openapi::{
    HeaderStyle, MediaType, Operation, Parameter, ParameterData, ParameterSchemaOrContent,
    ReferenceOr, RequestBody, Response, SchemaObject,
};
use aide::operation::{add_parameters, set_body, OperationInput, OperationOutput};
use schemars::schema::{InstanceType, StringValidation};
use schemars::JsonSchema;

use crate::auth::{Admitted, Caller, Roles};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, CorrelationId, IdempotencyKey, OptionalApiJson, Segment};
use crate::routes::answer::Answer;
use crate::routes::queries::{Params, Positioned, Refusal};

/// A problem+json answer described by `description`.
pub fn problem(ctx: &mut GenContext, description: &str) -> Response {
    let schema = ctx.schema.subschema_for::<Problem>().into_object();
    let mut response = Response {
        description: description.into(),
        ..Response::default()
    };
    response.content.insert(
        "application/problem+json".into(),
        MediaType {
            schema: Some(SchemaObject {
                json_schema: schema.into(),
                example: None,
                external_docs: None,
            }),
            ..MediaType::default()
        },
    );
    response
}

/// A JSON answer of type `T`.
fn json<T: JsonSchema>(ctx: &mut GenContext, description: &str) -> Response {
    let schema = ctx.schema.subschema_for::<T>().into_object();
    let mut response = Response {
        description: description.into(),
        ..Response::default()
    };
    response.content.insert(
        "application/json".into(),
        MediaType {
            schema: Some(SchemaObject {
                json_schema: schema.into(),
                example: None,
                external_docs: None,
            }),
            ..MediaType::default()
        },
    );
    response
}

/// The errors every JSON body can cause.
fn body_errors(ctx: &mut GenContext) -> Vec<(Option<u16>, Response)> {
    vec![
        (Some(400), problem(ctx, "Malformed JSON")),
        (Some(413), problem(ctx, "The body is over 64 KiB")),
        (Some(415), problem(ctx, "The body is not application/json")),
        (
            Some(422),
            problem(ctx, "Invalid values or unknown fields (with `errors`)"),
        ),
    ]
}

fn body<T: JsonSchema>(ctx: &mut GenContext, operation: &mut Operation, required: bool) {
    let schema = ctx.schema.subschema_for::<T>().into_object();
    let mut body = RequestBody {
        description: None,
        required,
        ..RequestBody::default()
    };
    body.content.insert(
        "application/json".into(),
        MediaType {
            schema: Some(SchemaObject {
                json_schema: schema.into(),
                example: None,
                external_docs: None,
            }),
            ..MediaType::default()
        },
    );
    set_body(ctx, operation, body);
}

/// An optional header parameter of printable ASCII, at most `max` bytes.
fn header(ctx: &mut GenContext, operation: &mut Operation, name: &str, max: u32, about: &str) {
    let schema = schemars::schema::SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        string: Some(Box::new(StringValidation {
            max_length: Some(max),
            min_length: Some(1),
            pattern: Some("^[!-~]+$".into()),
        })),
        ..Default::default()
    };
    let parameter = Parameter::Header {
        parameter_data: ParameterData {
            name: name.into(),
            description: Some(about.into()),
            required: false,
            deprecated: None,
            format: ParameterSchemaOrContent::Schema(SchemaObject {
                json_schema: schema.into(),
                example: None,
                external_docs: None,
            }),
            example: None,
            examples: Default::default(),
            explode: None,
            extensions: Default::default(),
        },
        style: HeaderStyle::Simple,
    };
    add_parameters(ctx, operation, [parameter]);
}

impl OperationInput for Caller {
    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        vec![
            (
                Some(401),
                problem(ctx, "No token, or a token that fails verification"),
            ),
            (
                Some(403),
                problem(
                    ctx,
                    "The role may not do this, or the resource is someone else's",
                ),
            ),
        ]
    }
}

/// The roles `R` admits, and the answers of [`Caller`].
impl<R: Roles> OperationInput for Admitted<R> {
    fn operation_input(_ctx: &mut GenContext, operation: &mut Operation) {
        super::document_roles(operation, R::ROLES);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        Caller::inferred_early_responses(ctx, operation)
    }
}

/// The path parameter is documented by the route's typed path
/// ([`super::path`]): a [`Segment`] does not know its name.
impl OperationInput for Segment {}

impl OperationInput for CorrelationId {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        header(
            ctx,
            operation,
            "X-Correlation-Id",
            128,
            "Recorded on every event the request causes and echoed on the answer \
             (a new one is made when absent or malformed)",
        );
    }
}

impl OperationInput for IdempotencyKey {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        header(
            ctx,
            operation,
            "Idempotency-Key",
            200,
            "A retry with the same key and body answers as the first time and appends \
             nothing; the same key with another body is 422",
        );
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        vec![(
            Some(422),
            problem(ctx, "Invalid values or unknown fields (with `errors`)"),
        )]
    }
}

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        body::<T>(ctx, operation, true);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        body_errors(ctx)
    }
}

impl<T: JsonSchema> OperationInput for OptionalApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        body::<T>(ctx, operation, false);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        body_errors(ctx)
    }
}

/// The parameters themselves are documented by the route's typed query
/// ([`super::query`]).
impl OperationInput for Params {
    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        vec![
            (
                Some(400),
                problem(ctx, "A query string that does not decode"),
            ),
            (
                Some(422),
                problem(
                    ctx,
                    "An unknown, repeated or invalid query parameter (with `errors`)",
                ),
            ),
        ]
    }
}

impl OperationOutput for ApiError {
    type Inner = Problem;

    fn operation_response(ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        Some(problem(ctx, "A problem"))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        vec![(Some(500), problem(ctx, "An unexpected error (logged)"))]
    }
}

impl OperationOutput for Refusal {
    type Inner = Problem;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<Response> {
        ApiError::operation_response(ctx, operation)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        ApiError::inferred_responses(ctx, operation)
    }
}

impl<T: JsonSchema> OperationOutput for Positioned<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        let mut response = json::<T>(ctx, "The answer, with `X-Fulcrum-Position`");
        let schema = ctx.schema.subschema_for::<i64>().into_object();
        response.headers.insert(
            "X-Fulcrum-Position".into(),
            ReferenceOr::Item(aide::openapi::Header {
                description: Some("The read model's global position".into()),
                style: HeaderStyle::Simple,
                required: true,
                deprecated: None,
                format: ParameterSchemaOrContent::Schema(SchemaObject {
                    json_schema: schema.into(),
                    example: None,
                    external_docs: None,
                }),
                example: None,
                examples: Default::default(),
                extensions: Default::default(),
            }),
        );
        Some(response)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(Some(200), r)])
            .unwrap_or_default()
    }
}

impl OperationOutput for crate::routes::audit::SealOutcome {
    type Inner = eventstore::seal::Seal;

    fn operation_response(ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        Some(json::<eventstore::seal::Seal>(ctx, "The seal"))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        vec![
            (
                Some(201),
                json::<eventstore::seal::Seal>(ctx, "A new seal of what was new"),
            ),
            (
                Some(200),
                json::<eventstore::seal::Seal>(ctx, "Nothing was new: the latest seal"),
            ),
        ]
    }
}

impl<const STATUS: u16, T: JsonSchema> OperationOutput for Answer<STATUS, T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        Some(json::<T>(ctx, "The answer"))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<u16>, Response)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(Some(STATUS), r)])
            .unwrap_or_default()
    }
}
