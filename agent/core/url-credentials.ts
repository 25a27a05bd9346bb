/**
 * A URL (or what was meant as one) as it may be shown in a message: everything between the scheme
 * and the last '@' replaced by '…'. What sits there may be a user name and password, and a
 * password may hold '/', '?' or '#', so no stricter parse decides where it ends; a URL that does
 * not parse at all is shown this way too.
 */
export function withoutCredentials(url: string): string {
  const at = url.lastIndexOf('@');
  if (at < 0) return url;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0] ?? '';
  return `${scheme}…${url.slice(at)}`;
}
