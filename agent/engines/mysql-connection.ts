/**
 * Moved: the option-file code is in agent/process/mysql-option-file.ts, the
 * schema in core/engine-options/connection.ts. Only agent/commands/binlog-push.ts
 * still imports this path; remove the file once it imports those.
 */
export { mysqlConnectionSchema, type MysqlConnection } from '../core/engine-options/connection.ts';
export { explainMysqlError, mysqlOptionFile, type OptionFile } from '../process/mysql-option-file.ts';
