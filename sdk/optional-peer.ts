/**
 * Broker clients and database drivers are optional peer dependencies of the SDK package
 * (sdk/package.json): a service installs only those it uses, so each is loaded when first needed,
 * never when the SDK is imported.
 */
export async function optionalPeer<T>(name: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes(`'${name}'`)) {
      throw new Error(`this needs ${name}, an optional peer dependency of @concord/sdk: npm install ${name}`, { cause: err });
    }
    throw err;
  }
}
