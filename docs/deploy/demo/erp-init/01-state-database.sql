-- Demo only: erpsync's own state database lives on the demo ERP's server, so the demo never
-- touches the state database of a production erpsync started from the same compose file.
CREATE DATABASE erpsync_state OWNER demo;
