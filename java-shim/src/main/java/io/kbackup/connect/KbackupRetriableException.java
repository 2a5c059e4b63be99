package io.kbackup.connect;

import org.apache.kafka.connect.errors.RetriableException;

/**
 * A kbackup failure that may go away on its own (broker unreachable, timeout): Connect retries
 * the call. It cannot extend {@link KbackupException} (single inheritance); both are
 * {@code ConnectException}s.
 */
public class KbackupRetriableException extends RetriableException {
    private static final long serialVersionUID = 1L;

    public KbackupRetriableException(String message) {
        super(message);
    }

    public KbackupRetriableException(String message, Throwable cause) {
        super(message, cause);
    }
}
