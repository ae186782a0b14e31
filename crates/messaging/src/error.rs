use std::time::Duration;

/// What went wrong with the broker. Every variant but `InvalidAddress` means: drop the
/// connection, back off, connect again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MessagingError {
    #[error("invalid RabbitMQ URL: {0}")]
    InvalidAddress(String),
    #[error("broker did not answer {operation} within {timeout:?}")]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
    #[error("broker {operation} failed: {reason}")]
    Broker {
        operation: &'static str,
        reason: String,
    },
    /// The channel or connection closed under us; the reason is the broker's when known.
    #[error("broker channel closed: {0}")]
    Closed(String),
    /// The broker refused or could not route a message.
    #[error("broker rejected message {message_id}: {reason}")]
    Rejected { message_id: String, reason: String },
    /// No node of the cluster answered; each node's error.
    #[error("no broker node answered: {0}")]
    NoNodeAnswered(String),
}

impl MessagingError {
    pub(crate) fn broker(operation: &'static str, error: amqprs::error::Error) -> Self {
        MessagingError::Broker {
            operation,
            reason: error.to_string(),
        }
    }
}

/// Runs one broker call with a deadline.
pub(crate) async fn within<T>(
    operation: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, amqprs::error::Error>>,
) -> Result<T, MessagingError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(MessagingError::broker(operation, error)),
        Err(_) => Err(MessagingError::Timeout { operation, timeout }),
    }
}
