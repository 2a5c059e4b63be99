package io.kbackup.connect;

import org.apache.kafka.connect.errors.ConnectException;

/**
 * A fatal kbackup failure: bad configuration, a corrupt backup, an I/O error, or a bug caught at
 * the native boundary. The message says what failed and how to fix it. Connect fails the task.
 */
public class KbackupException extends ConnectException {
    private static final long serialVersionUID = 1L;

    public KbackupException(String message) {
        super(message);
    }

    public KbackupException(String message, Throwable cause) {
        super(message, cause);
    }
}
