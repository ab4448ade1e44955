export declare const ENTRYPOINTS: Record<string, Record<string, string>>;
export declare function entries(pkg: string): Record<string, string>;
