import { type LocalRepositoryOptions, openLocalRepository, type Repository } from '@ivmr/core';

/** Opens the repository in `dir`, runs `fn` and closes the repository whatever happens. */
export async function withRepository<T>(
  dir: string,
  options: LocalRepositoryOptions,
  fn: (repo: Repository) => Promise<T>,
): Promise<T> {
  const repo = await openLocalRepository(dir, options);
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}
